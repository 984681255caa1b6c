"""Every chapter teaches, not only shows: objectives and prerequisites at the top, "predict,
then run" questions answered by the next cell, and exercises in three tiers at the end, whose worked
solutions live with the instructor's notes (classroom/instructor/solutions/), not under the question.

The layout every chapter follows, so that a reader (and this test) finds the same parts in each:

- cell 1 (markdown) opens with ``**After this chapter you can:**``, a numbered list of 3-5 objectives,
  then ``**It assumes:**`` and what the reader should already know;
- each question is a markdown cell that opens with ``**Predict, then run.**``; the code cell right
  after it prints or draws the answer;
- the last cell (markdown) opens with ``## Exercises`` and has three tiers, in this order:
  ``### Check your understanding``, ``### Change the code``, ``### Investigate``; each exercise opens
  with ``**Exercise NN.k**`` (NN the chapter, k = 1, 2, ... in order);
- ``classroom/instructor/solutions/<chapter>.md`` has one ``## Exercise NN.k`` section per exercise.
"""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOLUTIONS = ROOT / "classroom" / "instructor" / "solutions"
TIERS = ("### Check your understanding", "### Change the code", "### Investigate")


def cells(path):
    return json.loads(path.read_text())["cells"]


def text(cell):
    return "".join(cell["source"])


def exercise_ids(markdown, chapter):
    return re.findall(rf"\*\*Exercise ({chapter}\.\d+)\*\*", markdown)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_opens_with_objectives_and_prerequisites(path):
    cell = cells(path)[1]
    source = text(cell)
    assert cell["cell_type"] == "markdown" and source.startswith("**After this chapter you can:**"), \
        f"{path.name}: cell 1 should open with '**After this chapter you can:**'"
    objectives, _, assumes = source.partition("**It assumes:**")
    items = re.findall(r"^\d+\. \S", objectives, flags=re.M)
    assert 3 <= len(items) <= 5, f"{path.name}: {len(items)} objectives; the course gives 3-5"
    assert len(assumes.strip()) > 20, f"{path.name}: say what the chapter assumes after '**It assumes:**'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_predict_then_run_questions_are_answered_by_the_next_cell(path):
    chapter = cells(path)
    questions = [i for i, c in enumerate(chapter)
                 if c["cell_type"] == "markdown" and text(c).startswith("**Predict, then run.**")]
    assert len(questions) >= 2, f"{path.name}: {len(questions)} 'Predict, then run' questions; at least 2"
    for i in questions:
        assert "?" in text(chapter[i]), f"{path.name} cell {i}: a question asks something"
        answer = chapter[i + 1]
        assert answer["cell_type"] == "code" and answer.get("outputs"), \
            f"{path.name} cell {i}: the cell right after a question must run and show its answer"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_ends_with_exercises_in_three_tiers_solved_for_instructors(path):
    chapter_number = path.stem[:2]
    last = cells(path)[-1]
    source = text(last)
    assert last["cell_type"] == "markdown" and source.startswith("## Exercises"), \
        f"{path.name}: the last cell should be the '## Exercises' section"
    positions = [source.find(tier) for tier in TIERS]
    assert -1 not in positions and positions == sorted(positions), f"{path.name}: the tiers, in order: {TIERS}"
    tiers = [source[start:end] for start, end in zip(positions, positions[1:] + [len(source)])]
    for tier, body in zip(TIERS, tiers):
        assert exercise_ids(body, chapter_number), f"{path.name}: no exercise under '{tier}'"
    ids = exercise_ids(source, chapter_number)
    assert ids == [f"{chapter_number}.{k}" for k in range(1, len(ids) + 1)] and len(ids) >= 3, \
        f"{path.name}: exercises numbered {ids}"
    assert "solution" not in source.lower().replace("classroom/instructor/solutions", ""), \
        f"{path.name}: solutions belong in the instructor's notes, not under the question"
    notes = SOLUTIONS / f"{path.stem}.md"
    assert f"classroom/instructor/solutions/{path.stem}.md" in source, f"{path.name}: point instructors to {notes.name}"
    assert notes.exists(), f"{path.name}: worked solutions missing: {notes.relative_to(ROOT)}"
    solved = notes.read_text()
    sections = re.split(r"^## Exercise ", solved, flags=re.M)[1:]
    assert [s.split()[0] for s in sections] == ids, \
        f"{notes.name}: one '## Exercise NN.k' section per exercise, in order ({ids})"
    for section in sections:
        assert len(section) > 150, f"{notes.name}, exercise {section.split()[0]}: a worked solution, not a one-liner"
        for block in re.findall(r"```python\n(.*?)```", section, flags=re.S):
            ast.parse(block)  # code in a solution is at least valid Python
