"""Tools built on the layers above: one experiment in one call (:mod:`~peftlab.tools.experiments`),
the memory calculator (:mod:`~peftlab.tools.memory`), the computations behind the explorers
(:mod:`~peftlab.tools.explore`), the explorers themselves -- the only module that draws
(:mod:`~peftlab.tools.widgets`) -- and the ``peftlab`` command line (:mod:`~peftlab.tools.cli`)."""
