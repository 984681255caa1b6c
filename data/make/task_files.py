"""Write the course's task files, ``data/tasks/<task>/<split>.jsonl``, byte for byte from a fixed seed.

    python data/make/task_files.py

This builds the course's asset; no chapter imports it. The course reads the files through
``peftlab.course.tasks.load_task``, which also documents the three tasks. Their words come from
the pretraining corpus (``corpus.py`` beside this file), which never uses the tasks' formats.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import corpus  # data/make/corpus.py, beside this file
from peftlab.course.tasks import SPLIT_SIZES, TASK_NAMES

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"


def _sentiment(r: random.Random) -> dict:
    positive = r.random() < 0.5
    words = corpus.GOOD if positive else corpus.BAD
    topic = r.choice(corpus.FOODS + corpus.EVENTS + corpus.PLACES)
    a, b = r.sample([w for w in words if w not in ("happy", "sad")], 2)
    # A quarter of the reviews mix in one adjective of the other polarity after "but":
    # the verdict follows the clause after "but", so word counting alone is not enough.
    if r.random() < 0.25:
        other = r.choice(corpus.BAD if positive else corpus.GOOD)
        text = f"the {topic} was {other} but {a} and {b}."
    else:
        text = f"the {topic} was {a} and {b}."
    return {"prompt": f"review: {text} sentiment:", "answer": " positive" if positive else " negative"}


def _addition(r: random.Random) -> dict:
    # The ranges of the corpus's counting stories ("had 41 ... found 17 more ... now had 58"):
    # the base model can add in a story, but has never seen the formula.
    a, b = r.randint(1, 60), r.randint(1, 39)
    return {"prompt": f"{a}+{b}=", "answer": str(a + b)}


def _reverse(r: random.Random) -> dict:
    words = r.sample(corpus.COLORS + corpus.ANIMALS + corpus.THINGS, 3)
    return {"prompt": "reverse: " + " ".join(words) + " ->", "answer": " " + " ".join(reversed(words))}


GENERATORS = {"sentiment": _sentiment, "addition": _addition, "reverse": _reverse}


def generate_task(name: str, seed: int = 1234) -> dict[str, list[dict]]:
    """Train/validation/test splits with no prompt shared between splits."""
    if name not in GENERATORS:
        raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(TASK_NAMES)}")
    r = random.Random(f"{name}-{seed}")
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for split, size in SPLIT_SIZES.items():
        rows = []
        while len(rows) < size:
            ex = GENERATORS[name](r)
            if ex["prompt"] not in seen:
                seen.add(ex["prompt"])
                rows.append(ex)
        splits[split] = rows
    return splits


def write_task_files(out_dir: Path = TASKS_DIR, seed: int = 1234) -> None:
    for name in TASK_NAMES:
        for split, rows in generate_task(name, seed).items():
            path = Path(out_dir) / name / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    write_task_files()
    print(f"wrote {', '.join(TASK_NAMES)} to {TASKS_DIR}")
