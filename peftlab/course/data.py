"""Where the course's data lives: the one place that finds it.

The data -- the base model (``base/``), the tasks (``tasks/``), held-out stories (``stories/``)
and stored GPU measurements (``results/``) -- is the repository's ``data/`` folder. A
non-editable install (``pip install .``) copies it into the package as ``peftlab/data``, so
the course works from any folder. ``PEFTLAB_DATA`` points elsewhere (a copy you rebuilt, say).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The folder that holds ``base/``, ``tasks/``, ``stories/`` and ``results/``."""
    if os.environ.get("PEFTLAB_DATA"):
        return Path(os.environ["PEFTLAB_DATA"])
    installed = PACKAGE / "data"  # a wheel (pip install .) carries the data inside the package
    # otherwise a checkout, or an editable install of one: the repository's data/ beside the package
    return installed if installed.is_dir() else PACKAGE.parent / "data"


def data_path(*parts: str) -> Path:
    """A path inside the data folder, e.g. ``data_path("tasks", "addition", "train.jsonl")``."""
    return data_dir().joinpath(*parts)
