"""Write the course's task files, ``data/tasks/<task>/<split>.jsonl``, byte for byte from a fixed seed.

    python data/make/task_files.py

This builds the course's asset; no chapter imports it. The course reads the files through
``peftlab.course.tasks.load_task``, which also documents the three tasks and chapter 08's ``facts``. Their
words come from the pretraining corpus (``corpus.py`` beside this file), which never uses the tasks' formats.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import corpus  # data/make/corpus.py, beside this file
from peftlab.course.tasks import MEMORY_TASKS, SPLIT_SIZES, TASK_NAMES

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


# Chapter 08's capacity task: FACTS arbitrary facts, "anna red fox #" -> "07". Each key is a name, a colour and an
# animal of the corpus (one token each), each value a random two-digit number (two digit tokens): about 6.6 bits per
# fact that nothing in the key predicts, so the only way to score is to store every fact in the weights. 1,000 facts
# (about 6,600 bits) came from single-seed pilot runs on the 2-core machine: full fine-tuning stored all of them in
# about 2,000 steps, while LoRA r=1 on every linear layer (about 9.7k parameters) was still near chance after 1,000.
# Trained to convergence (chapter 08's study "limits"), r=1 stores nearly all of them too, only several times slower:
# a set where its final exact match falls short would need more facts or longer values (exercise 08.8).
FACTS = 1000


def generate_facts(n: int = FACTS, seed: int = 1234) -> dict[str, list[dict]]:
    """Train: all ``n`` facts. Validation and test: disjoint samples OF THE TRAINING FACTS (``SPLIT_SIZES`` of them).

    Arbitrary facts cannot generalise to an unseen key, so here the held splits measure how many of the trained
    facts the model has stored, not how well it generalises; they stay apart from each other so that choosing the
    rate and the checkpoint on validation still never reads the test facts."""
    held = SPLIT_SIZES["validation"] + SPLIT_SIZES["test"]
    if n < held:
        raise ValueError(f"need at least {held} facts to hold validation and test subsets, got {n}")
    r = random.Random(f"facts-{seed}")
    keys = r.sample([f"{name} {color} {animal}" for name in corpus.NAMES for color in corpus.COLORS
                     for animal in corpus.ANIMALS], n)
    facts = [{"prompt": f"{key} #", "answer": f"{r.randrange(100):02d}"} for key in keys]
    picked = r.sample(range(n), held)
    return {"train": facts, "validation": [facts[i] for i in picked[:SPLIT_SIZES["validation"]]],
            "test": [facts[i] for i in picked[SPLIT_SIZES["validation"]:]]}


def write_task_files(out_dir: Path = TASKS_DIR, seed: int = 1234) -> None:
    for name in TASK_NAMES + MEMORY_TASKS:
        splits = generate_facts(seed=seed) if name in MEMORY_TASKS else generate_task(name, seed)
        for split, rows in splits.items():
            path = Path(out_dir) / name / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    write_task_files()
    print(f"wrote {', '.join(TASK_NAMES + MEMORY_TASKS)} to {TASKS_DIR}")
