"""The adaptation tasks of the course: three small datasets the base model cannot do zero-shot.

Each task is a list of ``{"prompt": ..., "answer": ...}`` examples. The model reads
the prompt and must produce the answer followed by the end-of-text token. All three
are scored by **exact match**: every answer token (and the closing end-of-text) must
be the model's top choice. Computed with one teacher-forced forward pass, this is the
same number greedy decoding would give (greedy decoding emits exactly the argmax
tokens as long as every earlier one was right) -- and it is far faster.

| task      | kind                | example prompt                                    | answer      |
|-----------|---------------------|---------------------------------------------------|-------------|
| sentiment | classification      | ``review: the soup was cold and stale. sentiment:`` | `` negative`` |
| addition  | arithmetic          | ``41+17=``                                          | ``58``        |
| reverse   | text transformation | ``reverse: red cat big ->``                         | `` big cat red`` |

The pretraining corpus (:mod:`peftlab.corpus`) uses the same words but never these
formats, which is why the base model scores near zero and a few hundred steps of
PEFT teach it. The files in ``data/tasks`` are written by :func:`write_task_files`
from a fixed seed; ``python -m peftlab.tasks`` rebuilds them byte for byte.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from peftlab import corpus

TASK_NAMES = ("sentiment", "addition", "reverse")
SPLIT_SIZES = {"train": 1500, "validation": 200, "test": 400}
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TASKS_DIR = DATA_DIR / "tasks"


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


def load_task(name: str, split: str = "train", limit: int | None = None) -> list[dict]:
    """The examples of one split of a bundled task, read from ``data/tasks``."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(TASK_NAMES)}")
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; the splits are {', '.join(SPLIT_SIZES)}")
    path = TASKS_DIR / name / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return rows[:limit] if limit is not None else rows


def encode_example(tokenizer, example: dict) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer + end-of-text, and labels that score only the answer.

    Prompt and answer are tokenized separately so the boundary never merges into one
    token; labels are -100 (ignored by the loss) on the prompt.
    """
    prompt_ids = tokenizer(example["prompt"])["input_ids"]  # starts with the BOS token
    answer_ids = tokenizer(example["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


if __name__ == "__main__":
    write_task_files()
    print(f"wrote {', '.join(TASK_NAMES)} to {TASKS_DIR}")
