"""A non-editable install works from any folder: ``pip install .`` into a fresh venv carries the
package's layers and the course's data (base model, tasks, stories, GPU measurements), and not
the scripts that build that data."""

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def own_install() -> list[str]:
    """What this environment holds of peftlab (an editable install: a .pth, a finder and its dist-info)."""
    return sorted(p.name for p in Path(sysconfig.get_paths()["purelib"]).iterdir() if "peftlab" in p.name)


def test_pip_install_into_a_fresh_venv_then_load_base_from_another_folder(tmp_path):
    # Build from a copy of what the wheel is made of, so that the checkout gets no build/ folder.
    source = tmp_path / "source"
    for part in ("peftlab", "data"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies (torch, transformers, ...) come from this environment, without a download; its own
    # editable peftlab does not come along (a path in a .pth file does not run that folder's .pth files).
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    own_before = own_install()
    # --ignore-installed: pip must not uninstall the peftlab of the environment running this test
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--ignore-installed", "--disable-pip-version-check", "--prefix", str(venv), str(source)], check=True)
    assert own_install() == own_before, "pip changed this environment's own peftlab"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = ("import peftlab\n"
             "from peftlab.course.data import data_dir\n"
             "from peftlab.course.tasks import load_stories\n"
             "model, tokenizer = peftlab.load_base()\n"
             "print(peftlab.__file__)\n"
             "print(data_dir())\n"
             "print(sum(p.numel() for p in model.parameters()), len(peftlab.load_task('addition', 'test')),\n"
             "      len(load_stories()), (data_dir() / 'results' / 'gpu_memory.json').is_file())\n")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", check], cwd=elsewhere, check=True, capture_output=True,
                         text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}).stdout.split("\n")
    package_file, data, counts = out[0], Path(out[1]), out[2]
    assert package_file.startswith(str(site / "peftlab")), package_file
    assert data == site / "peftlab" / "data"
    parameters = json.loads((ROOT / "data" / "base" / "train_log.json").read_text())["parameters"]
    assert counts == f"{parameters} 400 300 True"
    assert not (data / "make").exists(), "the scripts that build data/ are not part of the installed package"
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "peftlab").rglob("*.py") if "__pycache__" not in p.parts}
    installed = {p.relative_to(site).as_posix() for p in (site / "peftlab").rglob("*.py") if "__pycache__" not in p.parts}
    assert installed == modules, f"not installed: {sorted(modules - installed)} (list new folders in pyproject.toml)"
