"""The student copy (`make student-release`, scripts/student_release.py) gives no answer away and still runs.

It must hold none of the instructor's files, no nbgrader solution or hidden-test marker, none of the text of a
solution or hidden test of classroom/source/ and none of the worked answers of classroom/instructor/; it must hold
every released assignment and only files git tracks; and the package must import from it and find the bundled
model there.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "student_release.py"
SOURCES = sorted((ROOT / "classroom" / "source").glob("*/*.ipynb"))

# Paths (relative to the copy) that hold answers or are the instructor's, and folder or file names nbgrader
# writes wherever an instructor runs it (grades, submissions, generated solutions).
FORBIDDEN = ["classroom/source", "classroom/instructor", "classroom/mistakes.json", "classroom/autograder.py",
             "classroom/nbgrader_config.py", "docs/instructors-guide.md", "tests"]
FORBIDDEN_NAMES = {"gradebook.db", "grades.csv", "submitted", "autograded", "feedback", "solution", "source_with_tests",
                   "downloaded", "exchange"}
REGIONS = [("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")]


def load_script():
    spec = importlib.util.spec_from_file_location("student_release", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    out = tmp_path_factory.mktemp("release").resolve() / "peftlab-student"  # resolved: the script names it so
    assert load_script().main(["--out", str(out)]) == 0
    return out


def normalized(text: str) -> str:
    """Lines stripped, blank lines dropped: a re-indented or re-wrapped cell still matches."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def answers() -> list[tuple[str, str, bool]]:
    """(assignment, text, is_prose) for every solution and hidden test of classroom/source/."""
    found = []
    for path in SOURCES:
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            regions = [m.group(1) for begin, end in REGIONS
                       for m in re.finditer(re.escape(begin) + r"\n(.*?)" + re.escape(end), source, re.S)]
            if not regions and cell["metadata"].get("nbgrader", {}).get("solution"):
                regions = [source]  # a solution cell without markers (a written answer) is replaced whole
            found += [(path.parent.name, region, cell["cell_type"] == "markdown") for region in regions]
    return found


def copied_texts(copy: Path) -> dict[str, str]:
    """Every text file of the copy, normalized; a notebook as its cells' sources (its JSON escapes quotes)."""
    texts = {}
    for path in copy.rglob("*"):
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # the model's weights: checked for markers by the script, byte by byte
        if path.suffix == ".ipynb":
            text = "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
        texts[str(path.relative_to(copy))] = normalized(text)
    return texts


def test_no_instructor_file_ships(copy):
    for forbidden in FORBIDDEN:
        assert not (copy / forbidden).exists(), f"{forbidden} is in the student copy"
    shipped = [path.relative_to(copy) for path in copy.rglob("*")]
    assert not [str(p) for p in shipped if FORBIDDEN_NAMES & set(p.parts)], "nbgrader's working files are in the copy"


def test_only_tracked_files_ship(copy):
    """The list comes from git: untracked files (a gradebook, a student's submission, scratch work) never ship."""
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n"))
    shipped = {str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()}
    assert shipped - {"README.md"} <= tracked, sorted(shipped - tracked - {"README.md"})


def test_no_solution_or_hidden_test_ships(copy):
    texts = copied_texts(copy)
    for name, text in texts.items():
        for begin, _ in REGIONS:
            assert begin not in text, f"{name} holds {begin!r}"
    regions = answers()
    assert len(regions) >= 20 and sum(prose for _, _, prose in regions) >= 1, "the answers were not found in classroom/source"
    for assignment, region, prose in regions:
        # Whole regions: single lines of a solution are, by design, also in the chapters and the package
        # (chapter 02 builds the same adapter). A written answer's sentences are its own, so each is checked.
        pieces = [normalized(region)] + ([line for line in normalized(region).splitlines() if len(line) > 40] if prose else [])
        for piece in pieces:
            leaked = [name for name, text in texts.items() if piece in text]
            assert not leaked, f"{assignment}: an answer is in {leaked}: {piece[:80]!r}"


def test_no_worked_answer_to_an_exercise_ships(copy):
    """The prose of classroom/instructor/solutions/ is nowhere in the copy. Its code is left out of the check (it
    reuses the chapters' own lines), and so are the questions it restates (they are the chapters')."""
    texts = copied_texts(copy)
    checked = 0
    for notes in sorted((ROOT / "classroom" / "instructor" / "solutions").glob("*.md")):
        prose = re.sub(r"```.*?```", "", notes.read_text(), flags=re.S)
        for paragraph in re.split(r"\n\s*\n", prose):
            if re.match(r"\W*(#|Restated|For instructors)", paragraph.strip()):
                continue
            for line in (line.strip() for line in paragraph.splitlines()):
                if len(line) >= 60:
                    checked += 1
                    leaked = [name for name, text in texts.items() if line in text]
                    assert not leaked, f"{notes.name}: a worked answer is in {leaked}: {line[:80]!r}"
    assert checked > 500, "the worked answers were not found"


def test_the_released_assignments_ship(copy):
    assert SOURCES, "no assignments in classroom/source"
    for source in SOURCES:
        released = Path("classroom", "release", source.parent.name, source.name)
        assert (copy / released).read_bytes() == (ROOT / released).read_bytes(), f"{released} missing or changed"
    assert (copy / "README.md").read_text() == (ROOT / "classroom" / "STUDENT_README.md").read_text()


def test_the_package_imports_and_finds_its_data_in_the_copy(copy):
    env = {k: v for k, v in os.environ.items() if k != "PEFTLAB_DATA"} | {"PYTHONPATH": str(copy), "HF_HUB_OFFLINE": "1"}
    # Loading the model would add seconds of transformers' import; its files are checked below instead.
    code = ("import peftlab\nfrom peftlab.course.data import data_dir\n"
            "print(peftlab.__file__, data_dir(), len(peftlab.load_task('addition', 'test')), sep='\\n')")
    result = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    package, data, examples = result.stdout.split()
    assert Path(package).is_relative_to(copy) and Path(data).is_relative_to(copy), result.stdout
    assert int(examples) > 0
    assert (Path(data) / "base" / "model.safetensors").is_file() and (Path(data) / "base" / "tokenizer.json").is_file()


def run_cli(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_a_non_empty_folder_is_replaced_only_with_force(tmp_path):
    out = tmp_path.resolve() / "copy"
    assert run_cli("--out", str(out)).returncode == 0
    (out / "left-over.txt").write_text("from an earlier copy")
    refused = run_cli("--out", str(out))
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == f"student-release: {out} is not empty: pass --force to replace it, or pick another --out\n"
    assert (out / "left-over.txt").exists(), "a refused run changed the folder"
    assert run_cli("--out", str(out), "--force").returncode == 0
    assert not (out / "left-over.txt").exists() and (out / "README.md").exists()


def test_force_never_deletes_what_is_not_a_student_copy(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for folder in (tmp_path, ROOT):
        refused = run_cli("--out", str(folder), "--force")
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert "not an earlier student copy" in refused.stderr and "Traceback" not in refused.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_copy_that_would_leak_is_not_written(tmp_path, monkeypatch):
    """The script's own check: were classroom/source/ ever listed as shipped, no copy is left to hand out."""
    script = load_script()
    monkeypatch.setattr(script, "SHIPPED", [*script.SHIPPED, "classroom/source/"])
    out = tmp_path / "copy"
    with pytest.raises(script.Refused, match="solution markers in classroom/source/"):
        script.build(out)
    assert not out.exists()
