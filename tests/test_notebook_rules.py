"""The rule for what nbval compares (docs/testing.md, "What the notebook tests compare"), checked on the stored notebooks.

nbval itself checks the compared outputs; `make test-older-cpu` checks them again under other round-off. These
tests catch the mistakes that a rerun on the recording machine cannot: a training or timing cell left compared,
a second marker mechanism, a notebook stored from a partial or out-of-order run.
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
IGNORE_TAG = "nbval-ignore-output"
# calls whose results differ between CPUs: training runs and clocks
TRAINS_OR_TIMES = re.compile(r"\b(train|run|train_prompt|forward_latency|seconds_to_run|run_to_convergence|finetune)\(|perf_counter\(")


def code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def printed_text(cell):
    """What a cell printed or returned (not widget views such as progress bars)."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append("".join(output["text"]))
        elif output["output_type"] in ("execute_result", "display_data"):
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" not in data:
                parts.append("".join(data.get("text/plain", "")) + json.dumps(data.get("application/vnd.plotly.v1+json", "")))
    return "".join(parts)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 10


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_come_from_one_fresh_run(path):
    counts = [c["execution_count"] for c in code_cells(path)]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: re-run it top to bottom in a fresh kernel"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_tag_is_the_only_marker(path):
    for i, cell in enumerate(code_cells(path)):
        assert "NBVAL_" not in "".join(cell["source"]), \
            f"{path.name} code cell {i}: use the '{IGNORE_TAG}' cell tag, not an NBVAL_ comment"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_that_train_or_time_print_no_compared_numbers(path):
    for i, cell in enumerate(code_cells(path)):
        source = "".join(cell["source"])
        if IGNORE_TAG in cell.get("metadata", {}).get("tags", []) or not TRAINS_OR_TIMES.search(source):
            continue
        printed = printed_text(cell)
        assert not re.search(r"\d", printed), (
            f"{path.name} code cell {i} trains or times and prints numbers that differ between CPUs: "
            f"tag it '{IGNORE_TAG}' and state its finding in an assert with a tolerance. It printed: {printed[:200]!r}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_stay_small(path):
    """No saved widget state (a plotly FigureWidget's data is megabytes) and no large embedded outputs."""
    notebook = json.loads(path.read_text())
    assert "widgets" not in notebook["metadata"], f"{path.name}: strip the saved widget state (metadata.widgets)"
    assert path.stat().st_size < 400_000, f"{path.name} is {path.stat().st_size:,} bytes: keep outputs short"
