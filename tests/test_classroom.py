"""The classroom's assignments, graded by nbgrader as an instructor would (classroom/, docs in its config).

For each assignment in ``classroom/source``, in a throwaway course folder:
- ``nbgrader generate_assignment`` makes exactly the release notebook kept in ``classroom/release``;
- ``nbgrader autograde`` gives the solution full marks, the untouched release zero (without the grader
  failing), and each typical mistake of ``classroom/mistakes.json`` the full marks less exactly the
  points of the checks that cover it;
- ``nbgrader generate_feedback`` writes feedback that names each mistake.
A submission that never returns is stopped by the per-cell time limit, and one whose kernel dies
fails the cell it died in (classroom/autograder.py): each scores zero on that check, and grading
goes on. Answers that an instructor grades by hand (assignment 6's recommendation) are left for
them: "full marks" is every automatically graded point, and the written answer waits, marked as
needing a manual grade.
"""

from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

ROOT = Path(__file__).resolve().parents[1]
CLASSROOM = ROOT / "classroom"
MISTAKES = json.loads((CLASSROOM / "mistakes.json").read_text())
ASSIGNMENTS = sorted(p.name for p in (CLASSROOM / "source").iterdir() if p.is_dir())
# Submissions as students write them, kept apart from the mistakes worth discussing in class: answers that are right
# but written differently from the source (each must score full marks), and plausible wrong ones (each must lose
# exactly the points of the checks under "loses", and its feedback say "feedback"). classroom/corpus/<name>.json,
# edits of the solution as in mistakes.json; never handed to students (scripts/student_release.py leaves it out).
CORPUS = {name: json.loads(path.read_text()) if (path := CLASSROOM / "corpus" / f"{name}.json").is_file()
          else {"correct": [], "wrong": []} for name in ASSIGNMENTS}


def wrong_answers(name: str) -> list[dict]:
    """Every wrong submission of an assignment: its typical mistakes, then the corpus's wrong answers."""
    return MISTAKES.get(name, []) + CORPUS[name]["wrong"]
# Seconds a cell may run while these tests grade. A submission that never returns is stopped by the course's own
# limit (60 s, nbgrader_config.py); every other one gets five times that, so that a busy machine (make test JOBS=4)
# cannot turn a slow cell into lost points: which points a submission loses must not depend on the clock.
TIME_LIMIT, ENDLESS_TIME_LIMIT = 300, 60


def nbgrader(course: Path, *args: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # nbgrader runs alembic
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def solution_of(source: dict) -> dict:
    """What a student who solved everything hands in: the source without its solution markers."""
    nb = copy.deepcopy(source)
    for cell in nb["cells"]:
        cell["source"] = re.sub(r"[ \t]*### (BEGIN|END) SOLUTION\n", "", "".join(cell["source"]))
    return nb


def with_mistake(solution: dict, mistake: dict) -> dict:
    nb = copy.deepcopy(solution)
    hits = [c for c in nb["cells"] if mistake["replace"] in c["source"]]
    name = mistake.get("mistake") or mistake["what"]
    assert len(hits) == 1, f"{name}: its text should occur in exactly one cell of the solution"
    hits[0]["source"] = hits[0]["source"].replace(mistake["replace"], mistake["with"])
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every assignment released, its submissions autograded and given feedback, in one throwaway course."""
    course = tmp_path_factory.mktemp("course")
    for settings in ("nbgrader_config.py", "autograder.py"):  # the executor that survives a dead kernel sits beside
        shutil.copy(CLASSROOM / settings, course)
    shutil.copytree(CLASSROOM / "source", course / "source")
    results = {}
    for name in ASSIGNMENTS:
        nbgrader(course, "generate_assignment", name, "--force")
        source = json.loads((course / "source" / name / f"{name}.ipynb").read_text())
        release = json.loads((course / "release" / name / f"{name}.ipynb").read_text())
        solution = solution_of(source)
        students = {"solution": solution, "untouched": release}
        students |= {f"mistake{i}": with_mistake(solution, m) for i, m in enumerate(wrong_answers(name))}
        students |= {f"correct{i}": with_mistake(solution, c) for i, c in enumerate(CORPUS[name]["correct"])}
        for student, nb in students.items():
            folder = course / "submitted" / student / name
            folder.mkdir(parents=True)
            (folder / f"{name}.ipynb").write_text(json.dumps(nb))
        endless = [f"mistake{i}" for i, m in enumerate(wrong_answers(name)) if "while True" in m["with"]]
        nbgrader(course, "autograde", name, "--force", f"--Execute.timeout={TIME_LIMIT}",
                 f"--CourseDirectory.student_id_exclude={','.join(endless)}")
        for student in endless:
            nbgrader(course, "autograde", name, "--force", f"--student={student}", f"--Execute.timeout={ENDLESS_TIME_LIMIT}")
        nbgrader(course, "generate_feedback", name, "--force")
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
            for student in students:
                submission = gradebook.find_submission_notebook(name, name, student)
                feedback = (course / "feedback" / student / name / f"{name}.html").read_text()
                automatic = [g for g in submission.grades if g.cell.cell_type == "code"]
                results[name, student] = {"grades": {g.name: g.score for g in automatic},
                                          "max": {g.name: g.max_score for g in automatic},
                                          "by_hand": {g.name: (g.manual_score, g.score, g.needs_manual_grade, g.max_score)
                                                      for g in submission.grades if g.cell.cell_type == "markdown"},
                                          "feedback": html.unescape(re.sub(r"<[^>]+>", "", feedback))}
    return course, results


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_release_in_the_repository_is_what_nbgrader_makes_from_the_source(graded, name):
    course, _ = graded
    made = (course / "release" / name / f"{name}.ipynb").read_text()
    kept = CLASSROOM / "release" / name / f"{name}.ipynb"
    assert kept.is_file() and kept.read_text() == made, \
        f"{kept.relative_to(ROOT)} differs from what nbgrader generate_assignment makes of the source: run " \
        f"`nbgrader generate_assignment {name} --force` in classroom/"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_solution_scores_full_marks_and_the_untouched_release_zero(graded, name):
    _, results = graded
    solution, untouched = results[name, "solution"], results[name, "untouched"]
    assert solution["grades"] == solution["max"] and sum(solution["max"].values()) > 0
    assert set(untouched["grades"].values()) == {0.0}
    assert "not written yet" in untouched["feedback"], "an unanswered cell says so in the feedback"
    for answer, (manual_score, _, needs_manual_grade, points) in solution["by_hand"].items():
        assert needs_manual_grade and manual_score is None and points > 0, \
            f"{answer}: a written answer waits for the instructor"
    for answer, (_, score, needs_manual_grade, _) in untouched["by_hand"].items():
        assert score == 0 and not needs_manual_grade, f"{answer}: left as released, it scores zero without a reader"


def test_one_assignment_is_graded_by_hand_with_a_rubric():
    source = json.loads((CLASSROOM / "source" / "choose_method" / "choose_method.ipynb").read_text())
    by_hand = [c for c in source["cells"] if c["cell_type"] == "markdown" and c["metadata"]["nbgrader"]["grade"]]
    assert by_hand and all(c["metadata"]["nbgrader"]["points"] > 0 for c in by_hand)
    question = next(c for c in source["cells"] if c["metadata"]["nbgrader"]["grade_id"] == "write-choice")
    points = sum(c["metadata"]["nbgrader"]["points"] for c in by_hand)
    rubric = re.findall(r"^\d+\. ", "".join(question["source"]), flags=re.M)
    assert len(rubric) == points, "the question lists the rubric: one line per point"


@pytest.mark.parametrize("name, index", [(n, i) for n in ASSIGNMENTS for i in range(len(wrong_answers(n)))])
def test_a_typical_mistake_loses_exactly_the_points_of_its_check_and_is_named(graded, name, index):
    _, results = graded
    mistake, result = wrong_answers(name)[index], results[name, f"mistake{index}"]
    lost = {check: result["max"][check] - score for check, score in result["grades"].items() if score < result["max"][check]}
    assert lost == mistake["loses"], f"{mistake['mistake']}: lost {lost}, expected {mistake['loses']}"
    assert mistake["feedback"] in result["feedback"], f"{mistake['mistake']}: the feedback does not say it"


def test_every_assignment_has_typical_mistakes_one_that_never_returns_and_one_that_crashes():
    assert ASSIGNMENTS and all(MISTAKES.get(name) for name in ASSIGNMENTS)
    assert any("while True" in m["with"] for name in ASSIGNMENTS for m in MISTAKES[name])
    assert any("os._exit" in m["with"] for name in ASSIGNMENTS for m in MISTAKES[name]), "and one whose kernel dies"


@pytest.mark.parametrize("name, index", [(n, i) for n in ASSIGNMENTS for i in range(len(CORPUS[n]["correct"]))])
def test_a_correct_answer_written_differently_scores_full_marks(graded, name, index):
    _, results = graded
    answer, result = CORPUS[name]["correct"][index], results[name, f"correct{index}"]
    assert result["grades"] == result["max"], f"{answer['what']}: scored {result['grades']} of {result['max']}"


def test_every_assignment_has_a_corpus_of_three_correct_and_ten_wrong_answers():
    for name in ASSIGNMENTS:
        assert len(CORPUS[name]["correct"]) >= 3 and len(wrong_answers(name)) >= 10, \
            f"{name}: {len(CORPUS[name]['correct'])} correct and {len(wrong_answers(name))} wrong submissions"
