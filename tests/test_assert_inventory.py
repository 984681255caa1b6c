"""Every assert in a chapter is listed in docs/asserts.md with a class that says why it holds on any CPU, seed and load.

(a) exact by construction; (b) an equality with a tolerance the arithmetic justifies; (c) an ordering or effect
larger than the spread of at least 5 seeds, stored; (d) a ratio of two timings interleaved in one cell, asserted on
the lower quartile of its per-round ratios. A chapter that gains an assert the inventory does not list fails here,
and so does a class (c) assert on a live training result whose stored seeds (data/results/chapter_seeds.json,
written by benchmarks/chapter_seeds.py) do not all hold it.
"""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = ROOT / "docs" / "asserts.md"
SEED_STUDY = ROOT / "data" / "results" / "chapter_seeds.json"
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ROW = re.compile(r"^\| (\d+) \| ([abcd]) \| `(.+)` \| (.+) \|$")


def assert_key(source: str) -> str:
    """What identifies an assert: its source with whitespace collapsed (benchmarks/chapter_seeds.py keys it so too)."""
    return " ".join(source.split())


def chapter_asserts(path: Path) -> list[tuple[int, str]]:
    found = []
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    for number, cell in enumerate(cells, start=1):
        source = "".join(cell["source"])
        found += [(number, assert_key(ast.get_source_segment(source, node)))
                  for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assert)]
    return found


def inventory() -> dict[str, dict[str, tuple[int, str, str]]]:
    """chapter -> assert -> (code cell, class, why), read from the tables of docs/asserts.md."""
    listed, chapter = {}, None
    for line in INVENTORY.read_text().splitlines():
        heading = re.match(r"^### (\d\d_\w+)$", line)
        if heading:
            chapter = heading.group(1)
            listed[chapter] = {}
        elif chapter and line.startswith("| ") and (row := ROW.match(line)):
            listed[chapter][row.group(3).replace("\\|", "|")] = (int(row.group(1)), row.group(2), row.group(4))
    return listed


LISTED = inventory()
SEED_RECORDS = json.loads(SEED_STUDY.read_text())["chapters"]


def test_the_inventory_lists_every_chapter():
    assert sorted(LISTED) == [p.stem for p in CHAPTERS]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_assert_of_the_chapter_is_listed_with_a_class(path):
    in_chapter = chapter_asserts(path)
    listed = LISTED[path.stem]
    missing = [f"code cell {n}: {key}" for n, key in in_chapter if key not in listed]
    assert not missing, f"{path.name}: asserts docs/asserts.md does not list (add each with its class):\n" + \
        "\n".join(missing)
    stale = sorted(set(listed) - {key for _, key in in_chapter})
    assert not stale, f"docs/asserts.md lists asserts {path.name} no longer has: {stale}"
    moved = [(key, listed[key][0], n) for n, key in in_chapter if listed[key][0] != n]
    assert not moved, f"{path.name}: code cells moved (assert, listed, now): {moved}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_timing_asserts_are_ratios_with_a_margin_over_the_noise(path):
    for key, (cell, klass, _) in LISTED[path.stem].items():
        times = re.search(r"latency|seconds|minutes|_step\b|merge\[", key) and "parameters" not in key
        if klass == "d":
            assert re.search(r"\.ratio\(.*\)\.low > |\.low > ", key), \
                f"{path.name} code cell {cell}: a class (d) assert tests the lower quartile of a Ratio: {key}"
        elif times and "minutes[\"Llama-2-70B\"] / minutes[\"Llama-2-7B\"]" not in key:
            pytest.fail(f"{path.name} code cell {cell}: a timing asserted outside class (d): {key}")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_class_c_asserts_name_stored_evidence_over_five_seeds(path):
    for key, (cell, klass, why) in LISTED[path.stem].items():
        files = re.findall(r"`(\w+\.json)`", why)
        assert klass != "c" or files, f"{path.name} code cell {cell}: a class (c) assert names its stored study: {key}"
        for name in files:
            assert (ROOT / "data" / "results" / name).exists(), f"{name} (named for {key}) is not in data/results"
        if "chapter_seeds.json" in files:  # a live training result: every stored seed must have held it
            seeds = SEED_RECORDS.get(path.stem, {}).get("asserts", {}).get(key)
            assert seeds, f"{path.name} code cell {cell}: no stored seeds for {key}: run benchmarks/chapter_seeds.py"
            assert len(seeds) >= 5, f"{path.name}: {key} was stored for {len(seeds)} seeds, not 5 or more"
            failed = sorted(seed for seed, runs in seeds.items() if not all(run["held"] for run in runs))
            assert not failed, f"{path.name} code cell {cell}: {key} failed for seeds {failed}"


def test_the_seed_study_ran_every_chapter_that_trains_without_errors():
    for path in CHAPTERS[:-1]:  # 00-08 train; 09 audits with stored results and timings
        chapter = SEED_RECORDS[path.stem]
        assert len(chapter["seconds"]) >= 5, f"{path.stem}: fewer than 5 seeds in {SEED_STUDY.name}"
        assert not chapter["errors"], f"{path.stem}: cells failed in the seed study: {chapter['errors']}"


# --- the tests' own training and timing asserts (the second table of docs/asserts.md) ---------------------------------

TEST_SEEDS = ROOT / "data" / "results" / "test_seeds.json"
TEST_ROW = re.compile(r"^\| (test_\w+\.py)::(\w+) \| ([abcd]) \| `(.+)` \| (.+) \|$")


def seeded_tests() -> set[str]:
    """file::function of every test marked ``seeded`` (it asserts a training result, trained with course_seed())."""
    found = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        found |= {f"{path.name}::{name}" for name in
                  re.findall(r"^@pytest\.mark\.seeded\n(?:@.*\n)*def (\w+)", path.read_text(), flags=re.M)}
    return found


def test_every_seeded_test_passed_for_five_stored_seeds():
    stored = json.loads(TEST_SEEDS.read_text())["tests"]
    by_function = {}
    for node, runs in stored.items():
        by_function.setdefault(node.split("/")[-1].split("[")[0], []).append((node, runs))
    assert set(by_function) == seeded_tests(), "run benchmarks/test_seeds.py again: the seeded tests changed"
    for nodes in by_function.values():
        for node, runs in nodes:
            assert len(runs) >= 5, f"{node}: stored for {len(runs)} seeds, not 5 or more"
            failed = sorted(seed for seed, outcome in runs.items() if outcome != "passed")
            assert not failed, f"{node} failed for seeds {failed}"


def test_the_tests_table_cites_seeds_only_for_seeded_tests():
    rows = [TEST_ROW.match(line) for line in INVENTORY.read_text().splitlines() if line.startswith("| test_")]
    assert rows and all(rows), "every row of the tests' table reads: | file::test | class | `assert` | why |"
    seeded = seeded_tests()
    for row in rows:
        test = f"{row.group(1)}::{row.group(2)}"
        assert (ROOT / "tests" / row.group(1)).exists(), f"docs/asserts.md lists {test}, which does not exist"
        if row.group(3) == "c":
            assert test in seeded and "test_seeds.json" in row.group(5), \
                f"{test}: a class (c) row of a test cites test_seeds.json, and the test is marked seeded"
