"""Run the course's notebooks top to bottom, one fresh kernel each, and time every chapter.

    python benchmarks/book_times.py OUT.json [--inplace | --save-to DIR] [--keep-going] [notebooks ...]

Each notebook runs as a learner runs it (nbclient, a new ``python3`` kernel, the notebook's folder as the
working folder), on the device the course picks (``course_device()``: the GPU when PyTorch sees one;
``PEFTLAB_DEVICE=cpu`` keeps the CPU). The wall-clock seconds of each chapter, the machine and any failing
cell go to ``OUT.json``; data/results/book_times.json holds the runs behind docs/benchmarks.md's table, with their
commands:

- on the 2-core CPU machine: ``python benchmarks/book_times.py cpu.json --inplace`` (this also stores the
  outputs that nbval compares: the notebooks are written back, cleaned as ``tidy`` below says);
- on one H200: ``python benchmarks/book_times.py gpu.json --keep-going`` (outputs not written back: the
  stored outputs stay the CPU's).

``--keep-going`` runs every cell even after one fails, and lists the failures, so that a single run on a
borrowed GPU finds every cell that needs fixing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def machine() -> dict:
    """What ran the book (``peftlab.course.measure.describe_machine``: the course's device, its name, the CPU)."""
    from peftlab.course.measure import describe_machine

    return describe_machine()


def tidy(nb) -> None:
    """What a stored notebook keeps: no widget state, one stream output where the kernel sent several pieces,
    and only the plotly JSON of a figure (its HTML fallback is megabytes)."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            data = out.get("data", {})
            if "application/vnd.plotly.v1+json" in data:
                out["data"] = {"application/vnd.plotly.v1+json": data["application/vnd.plotly.v1+json"]}
            if out.output_type == "stream" and kept and kept[-1].output_type == "stream" and kept[-1].name == out.name:
                kept[-1].text += out.text
                continue
            kept.append(out)
        cell.outputs = kept


def run_notebook(path: Path, keep_going: bool, timeout: int) -> tuple[object, dict]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=keep_going,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except Exception as exc:  # the first failing cell, when not keeping going
        lines = str(exc).strip().splitlines()
        error = f"{type(exc).__name__}: {lines[-1][:300] if lines else ''}"
    seconds = time.perf_counter() - start
    failures = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.output_type == "error":
                failures.append({"cell": index, "error": f"{out.ename}: {out.evalue}"[:300]})
    return nb, {"notebook": path.name, "seconds": round(seconds, 1), "failures": failures, "stopped_by": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("notebooks", nargs="*", help="file names in notebooks/ (default: every chapter, in order)")
    parser.add_argument("--inplace", action="store_true", help="write the executed notebooks back (tidied)")
    parser.add_argument("--keep-going", action="store_true", help="run every cell even after one fails")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may take")
    parser.add_argument("--save-to", type=Path, help="a folder for the executed notebooks (tidied), to read a run's outputs")
    args = parser.parse_intermixed_args()
    paths = [NOTEBOOKS / n for n in args.notebooks] or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}; choose from {', '.join(p.name for p in sorted(NOTEBOOKS.glob('*.ipynb')))}")
    report = {"command": "python benchmarks/book_times.py " + " ".join(sys.argv[1:]), "machine": machine(),
              "chapters": []}
    for path in paths:
        nb, row = run_notebook(path, args.keep_going, args.timeout)
        report["chapters"].append(row)
        print(f"{path.name:24s} {row['seconds']:7.1f} s  " +
              ("ok" if not row["failures"] and not row["stopped_by"] else f"FAILED {row['failures'] or row['stopped_by']}"),
              flush=True)
        tidy(nb)
        if args.inplace and not row["failures"] and not row["stopped_by"]:
            path.write_text(nbformat.writes(nb) + "\n")
        if args.save_to:
            args.save_to.mkdir(parents=True, exist_ok=True)
            (args.save_to / path.name).write_text(nbformat.writes(nb) + "\n")
        args.out.write_text(json.dumps(report, indent=1) + "\n")  # after every chapter: a cut-off run keeps what ran
    total = sum(r["seconds"] for r in report["chapters"])
    print(f"{'whole book':24s} {total:7.1f} s on {report['machine']['device']} ({report['machine']['name']})")


if __name__ == "__main__":
    main()
