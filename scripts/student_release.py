"""Build the student copy of the course: what a class receives instead of the repository.

The repository holds every answer (classroom/source/: the assignments' solutions and hidden tests;
classroom/instructor/: worked answers to every chapter's exercises; classroom/mistakes.json), so a class
gets this copy, made by ``make student-release``:

    python3 scripts/student_release.py [--out DIR] [--force]

The copy is an allow-list (SHIPPED below), read from git's index, so that an untracked file (a gradebook,
submissions, a scratch notebook) never ships, and a new folder of answers added later stays out until
someone adds it here on purpose. Files are copied as they are in the working tree. Only the standard
library is used: an instructor can run it before .venv exists.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "dist" / "peftlab-student"
STUDENT_README = "classroom/STUDENT_README.md"  # becomes the copy's README.md (pyproject.toml needs one)

# What students get, as git pathspecs: the package and what installs it offline (scripts/setup.sh reads
# pyproject.toml and constraints.txt; environment.yml is the conda route), the bundled model, tasks and stored
# results the chapters read (data/), the chapters, the docs they link to, the released assignments, and what the
# Makefile's targets run (conftest.py gives nbval's notebook checks their timeout; the two benchmarks are
# `make bench` and `make bench-methods`).
SHIPPED = [
    "peftlab/", "pyproject.toml", "constraints.txt", "environment.yml", "Makefile", "conftest.py", ".gitignore",
    "LICENSE", "scripts/setup.sh", "scripts/older_cpu.sh", "benchmarks/lora_bench.py", "benchmarks/methods_bench.py",
    "data/", "notebooks/", "docs/", "classroom/release/",
]
# Inside SHIPPED, but for the instructor: the guide names the grader's weak spots and the hand-graded rubric.
HELD_BACK = ["docs/instructors-guide.md"]
# nbgrader's markers: a file holding one would hand out a solution or a hidden test (a release notebook
# edited by hand, say). The copy is checked for them before it is called done.
MARKERS = [b"### BEGIN SOLUTION", b"### BEGIN HIDDEN TESTS", b"=== BEGIN MARK SCHEME ==="]


class Refused(Exception):
    """A problem the user can fix (an argument, a stale release): reported as one line, never a traceback."""


def shipped_files() -> list[str]:
    """The tracked files of SHIPPED less HELD_BACK, as paths relative to the repository."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", *SHIPPED], cwd=ROOT, capture_output=True, check=True).stdout
    except OSError:
        raise Refused("git is not on PATH: the file list comes from git") from None
    except subprocess.CalledProcessError as error:
        said = error.stderr.decode(errors="replace").strip().splitlines()
        raise Refused(f"the file list comes from git, which says: {said[0] if said else 'nothing'}") from None
    files = [name for name in listed.decode().split("\0") if name and name not in HELD_BACK]
    # A tracked file deleted in the working tree is a deletion not yet committed: it does not ship.
    return [name for name in files if (ROOT / name).is_file()]


def check_released() -> None:
    """Every assignment of classroom/source/ has its student version in classroom/release/."""
    for source in sorted((ROOT / "classroom" / "source").glob("*/*.ipynb")):
        released = ROOT / "classroom" / "release" / source.parent.name / source.name
        if not released.is_file():
            raise Refused(f"{released.relative_to(ROOT)} is missing: run `nbgrader generate_assignment "
                          f"{source.parent.name}` in classroom/ first")


def looks_like_a_student_copy(folder: Path) -> bool:
    """What --force may delete: an earlier copy, never the repository or a folder that holds it."""
    if folder == ROOT or folder in ROOT.parents:
        return False
    return ((folder / "peftlab" / "__init__.py").is_file() and (folder / "classroom" / "release").is_dir()
            and not (folder / "classroom" / "source").exists() and not (folder / ".git").exists())


def prepare(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise Refused(f"{out} is a file, not a folder: pick another --out")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise Refused(f"{out} is not empty: pass --force to replace it, or pick another --out")
        if not looks_like_a_student_copy(out):
            raise Refused(f"{out} is not an earlier student copy, so --force will not delete it: pick another --out")
        shutil.rmtree(out)


def leaks(out: Path) -> list[str]:
    """The copied files that hold an nbgrader solution or hidden-test marker."""
    return [str(path.relative_to(out)) for path in sorted(out.rglob("*"))
            if path.is_file() and any(marker in path.read_bytes() for marker in MARKERS)]


def build(out: Path, force: bool = False) -> list[str]:
    """Write the student copy to `out`; returns the files copied (relative paths)."""
    out = out.resolve()
    check_released()
    files = shipped_files()
    prepare(out, force)
    for name in files:
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    shutil.copy2(ROOT / STUDENT_README, out / "README.md")
    found = leaks(out)
    if found:
        shutil.rmtree(out)  # a copy that gives answers away must not be left where it could be handed out
        raise Refused(f"solution markers in {', '.join(found)}: regenerate classroom/release/ with nbgrader "
                      "generate_assignment; no copy written")
    return files + ["README.md"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the student copy of the course (no solutions, no instructor files).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder to write (default: {DEFAULT_OUT.relative_to(ROOT)}/ in the repository)")
    parser.add_argument("--force", action="store_true", help="replace an earlier student copy in --out")
    args = parser.parse_args(argv)
    try:
        files = build(args.out, args.force)
    except Refused as problem:
        print(f"student-release: {problem}", file=sys.stderr)
        return 1
    size = sum((args.out / name).stat().st_size for name in files)
    print(f"student-release: {len(files)} files, {size / 1e6:.1f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
