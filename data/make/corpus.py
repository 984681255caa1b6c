"""The pretraining corpus: short stories about a small world, generated deterministically.

The base model of the course has to be pretrained on *something* that ships with
the repo and needs no download. This module writes that something: simple stories
in plain English about people, animals, things, places, counting, giving and
finding, and how people felt about what they saw. From the stories the model learns
words, grammar, that numbers go up when you find more, and which adjectives go
with being happy or sad -- but it never sees the formats of the adaptation tasks
(``review: ... sentiment:``, ``41+17=``, ``reverse: ...``). Teaching those formats is
the job of the fine-tuning methods in the course.

    >>> docs = generate_documents(3, seed=0)   # same seed, same text, on any machine

``base_model.py`` pretrains on these stories; ``task_files.py`` takes its words from here.
Run as a script, it writes the held-out stories that the chapters read
(``data/stories/validation.jsonl``, through ``peftlab.course.tasks.load_stories``), byte for byte:

    python data/make/corpus.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

VALIDATION_SEED_OFFSET = 1_000_003  # the pretraining run's held-out stories come from seed + this
SHIPPED_STORIES = 300               # how many of them ship for the chapters (the run itself uses 4,000)
STORIES_FILE = Path(__file__).resolve().parent.parent / "stories" / "validation.jsonl"

NAMES = ["anna", "ben", "mia", "tom", "lily", "sam", "nora", "leo", "ella", "max",
         "ruby", "finn", "zoe", "omar", "ivy", "jack", "lena", "noah", "ada", "hugo"]
ANIMALS = ["cat", "dog", "bird", "fox", "frog", "horse", "duck", "mouse", "rabbit",
           "bear", "owl", "fish", "goat", "sheep", "lion", "tiger"]
THINGS = ["apple", "ball", "book", "cake", "cup", "hat", "kite", "lamp", "pen",
          "shell", "stone", "toy", "box", "coin", "flower", "leaf", "spoon", "key"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "pink",
          "orange", "gray", "purple", "gold"]
SIZES = ["big", "small", "tall", "short", "long", "tiny", "huge", "round"]
PLACES = ["park", "garden", "forest", "kitchen", "school", "market", "river",
          "beach", "house", "farm", "library", "street", "hill", "lake"]
FOODS = ["soup", "bread", "pie", "tea", "rice", "fruit", "salad", "cheese",
         "milk", "pasta", "cookies", "juice"]
EVENTS = ["show", "game", "trip", "party", "walk", "song", "story", "film",
          "lesson", "picnic", "visit", "meal"]
GOOD = ["good", "great", "lovely", "nice", "wonderful", "happy", "fun", "warm",
        "bright", "kind", "sweet", "perfect", "amazing", "pleasant", "fresh", "calm"]
BAD = ["bad", "awful", "terrible", "sad", "boring", "cold", "dark", "rude",
       "bitter", "broken", "dirty", "noisy", "horrible", "stale", "dull", "ugly"]
VERBS_PAST = ["saw", "found", "liked", "wanted", "painted", "found", "carried",
              "took", "held", "watched"]
TIMES = ["one morning", "in the evening", "on monday", "after school", "at night",
         "one day", "in the summer", "in the winter", "on sunday", "at noon"]


def _plural(word: str) -> str:
    if word in ("fish", "sheep"):
        return word
    if word == "mouse":
        return "mice"
    if word.endswith(("s", "x", "sh", "ch")):
        return word + "es"
    if word == "leaf":
        return "leaves"
    return word + "s"


def _count(n: int, word: str) -> str:
    return f"{n} {word if n == 1 else _plural(word)}"


def _sentence_see(r: random.Random, who: str) -> str:
    what = r.choice(ANIMALS + THINGS)
    adj = r.choice(COLORS + SIZES)
    return f"{who} {r.choice(VERBS_PAST)} a {adj} {what} in the {r.choice(PLACES)}."


def _sentence_feeling(r: random.Random, who: str) -> str:
    # Adjectives of one polarity travel together with the feeling they cause,
    # so the model can pick up which words are pleasant and which are not.
    good = r.random() < 0.5
    words = GOOD if good else BAD
    a, b = r.sample(words, 2)
    topic = r.choice(FOODS + EVENTS + PLACES)
    feeling = r.choice(["happy", "glad", "pleased"] if good else ["sad", "upset", "angry"])
    style = r.randrange(4)
    if style == 0:
        return f"the {topic} was {a} and {b}, so {who} was {feeling}."
    if style == 1:
        return f"{who} said the {topic} was {a}. {who} felt {feeling}."
    if style == 2:
        return f"it was a {a} {topic}. everyone was {feeling}."
    return f"{who} wrote a review of the {topic}. the sentiment was {'positive' if good else 'negative'}."


def _sentence_numbers(r: random.Random, who: str) -> str:
    thing = r.choice(THINGS + ANIMALS)
    n = r.randint(1, 60)
    k = r.randint(1, 39)
    style = r.randrange(4)
    if style == 0:
        return f"{who} had {_count(n, thing)}. then {who} found {k} more. now {who} had {_count(n + k, thing)}."
    if style == 1:
        return f"there were {_count(n, thing)} in the {r.choice(PLACES)}."
    if style == 2:
        m = r.randint(1, n)
        return f"{who} had {_count(n, thing)} and gave {m} away. {who} kept {n - m}."
    start = r.randint(1, 90)
    return "they counted " + ", ".join(str(i) for i in range(start, start + r.randint(3, 6))) + "."


def _sentence_list(r: random.Random, who: str) -> str:
    items = r.sample(COLORS if r.random() < 0.5 else ANIMALS + FOODS, r.randint(2, 4))
    listed = ", ".join(items[:-1]) + " and " + items[-1]
    return f"{who} likes {listed}."


def _sentence_meet(r: random.Random, who: str) -> str:
    other = r.choice(NAMES)
    return f"{r.choice(TIMES)}, {who} met {other} at the {r.choice(PLACES)} and they ate {r.choice(FOODS)}."


SENTENCE_KINDS = [_sentence_see, _sentence_feeling, _sentence_numbers, _sentence_list, _sentence_meet]


def generate_document(r: random.Random) -> str:
    """One short story: a hero and three to seven sentences about their day."""
    who = r.choice(NAMES)
    sentences = [r.choice(SENTENCE_KINDS)(r, who) for _ in range(r.randint(3, 7))]
    return " ".join(sentences)


def generate_documents(n: int, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return [generate_document(r) for _ in range(n)]


def write_validation_stories(path: Path = STORIES_FILE, seed: int = 0) -> None:
    """The first stories of the base model's validation split (seed 0 is the shipped model's), one JSON string a line."""
    stories = generate_documents(SHIPPED_STORIES, seed=seed + VALIDATION_SEED_OFFSET)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(story) + "\n" for story in stories))


if __name__ == "__main__":
    write_validation_stories()
    print(f"wrote {SHIPPED_STORIES} held-out stories to {STORIES_FILE}")
