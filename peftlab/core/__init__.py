"""The shared machinery every method uses: finding and wrapping target modules, switching a
method off, freezing (:mod:`peftlab.core.inject`), and saving and loading a method's tensors
(:mod:`peftlab.core.checkpoint`)."""
