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

Chapter 08 adds a fourth, ``facts``, which tests storage rather than a skill: 1,000 arbitrary facts
(``anna red fox #`` -> ``07``) whose validation and test splits are held samples of the training facts,
since an arbitrary fact cannot generalise to an unseen key (``MEMORY_TASKS``; not in ``TASK_NAMES``, which
the chapters and ``peftlab finetune`` offer as the course's tasks).

The pretraining corpus uses the same words but never these formats, which is why the
base model scores near zero and a few hundred steps of PEFT teach it. The files in
``data/tasks`` are written from a fixed seed by ``data/make/task_files.py``, which rebuilds
them byte for byte. ``load_stories`` reads held-out stories of that corpus (``data/stories``):
text the base model was not trained on, to measure how much of its pretraining a model keeps.
"""

from __future__ import annotations

import json

from peftlab.course.data import data_path

TASK_NAMES = ("sentiment", "addition", "reverse")
# Not a skill but a store: chapter 08's capacity task, 1,000 arbitrary facts ("anna red fox #" -> "07") whose
# validation and test splits are held subsets OF THE TRAINING FACTS (data/make/task_files.py says why).
MEMORY_TASKS = ("facts",)
SPLIT_SIZES = {"train": 1500, "validation": 200, "test": 400}


def load_task(name: str, split: str = "train", limit: int | None = None) -> list[dict]:
    """The examples of one split of a bundled task, read from ``data/tasks``."""
    if name not in TASK_NAMES + MEMORY_TASKS:
        raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(TASK_NAMES)} (and {', '.join(MEMORY_TASKS)}, "
                         "a memorization task)")
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; the splits are {', '.join(SPLIT_SIZES)}")
    rows = [json.loads(line) for line in data_path("tasks", name, f"{split}.jsonl").read_text().splitlines()]
    return rows[:_limit(limit)] if limit is not None else rows


def _limit(limit) -> int:
    """A limit is a count: a negative one would slice from the end (limit=-1: all but the last), silently."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a whole number of at least 0 (or None: all), got {limit!r}")
    return limit


def check_examples(examples, who: str) -> None:
    """Raise a ValueError naming the first example that is not a ``{"prompt": str, "answer": str}`` dict."""
    for i, example in enumerate(examples):
        if not isinstance(example, dict) or not all(isinstance(example.get(k), str) for k in ("prompt", "answer")):
            raise ValueError(f"{who}: example {i} is {example!r:.80}; each example is a dict with a 'prompt' and an "
                             "'answer' string, as load_task returns them")


def load_stories(limit: int | None = None) -> list[str]:
    """Held-out stories of the base model's pretraining corpus: the first 300 of its validation split."""
    stories = [json.loads(line) for line in data_path("stories", "validation.jsonl").read_text().splitlines()]
    return stories[:_limit(limit)] if limit is not None else stories


def encode_example(tokenizer, example: dict) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer + end-of-text, and labels that score only the answer.

    Prompt and answer are tokenized separately so the boundary never merges into one
    token; labels are -100 (ignored by the loss) on the prompt.
    """
    prompt_ids = tokenizer(example["prompt"])["input_ids"]  # starts with the BOS token
    answer_ids = tokenizer(example["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids

