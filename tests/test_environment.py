"""The environment the course promises: pinned versions that install together, offline."""

import re
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*-?\s*([A-Za-z0-9_.-]+)==([^\s#]+)", text, flags=re.M))


def test_environment_yml_pins_match_constraints():
    assert pins((ROOT / "environment.yml").read_text()) == pins((ROOT / "constraints.txt").read_text())


def test_installed_versions_are_the_pinned_ones():
    for name, pinned in pins((ROOT / "constraints.txt").read_text()).items():
        assert version(name).split("+")[0] == pinned, name


def test_torch_is_a_cpu_build_when_there_is_no_gpu():
    import torch

    if not torch.cuda.is_available():
        assert torch.version.cuda is None, "a CUDA build of torch was installed on a machine without a GPU"
