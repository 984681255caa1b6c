"""The course's interactive explorers: what they show, computed without a screen (:mod:`.compute`),
and the widgets that draw it (:mod:`.widgets`, the package's only module that draws)."""
