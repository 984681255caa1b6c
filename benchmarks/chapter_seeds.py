"""Run the chapters under several seeds and store what every assert measured: the evidence behind each assert on a
training result (docs/asserts.md, class c).

    python benchmarks/chapter_seeds.py data/results/chapter_seeds.json [--seeds 0 1 2 3 4] [--jobs 2] [notebooks ...]

Each chapter runs top to bottom in a fresh kernel, as ``benchmarks/book_times.py`` runs it, with ``PEFTLAB_SEED``
set (the chapters train with ``SEED = course_seed()``). Before a cell runs, each of its ``assert`` statements is
rewritten to record instead of raising: whether it held, and the values it compared (each side of a comparison,
and inside ``abs(...)`` the signed value, so that a study also shows which way a difference went). So one run shows
every assert under every seed, including the ones that fail. The stored notebooks are not touched.

Writes OUT (JSON): the command, the machine, and for each chapter and assert (keyed by its source text) the
records of every seed. ``--jobs`` runs that many chapters at once (one PyTorch thread each).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from book_times import NOTEBOOKS, machine  # noqa: E402

RECORDER = '''
import json as _json, os as _os
_SEED_STUDY = []
def _seed_study_record(key, held, values):
    def plain(v):
        try:
            return float(v)
        except Exception:
            return None
    _SEED_STUDY.append({"assert": key, "held": bool(held), "values": [plain(v) for v in values]})
'''
DUMP = '_os.makedirs(_os.path.dirname(_os.environ["SEED_STUDY_OUT"]), exist_ok=True)\n' \
       'open(_os.environ["SEED_STUDY_OUT"], "w").write(_json.dumps(_SEED_STUDY))'


def assert_key(source: str) -> str:
    """An assert's identity: its source text with whitespace collapsed (what docs/asserts.md lists)."""
    return " ".join(source.split())


class _Recording(ast.NodeTransformer):
    """``assert test, msg`` -> ``_seed_study_record(key, test, [operands])``: records, never raises."""

    def __init__(self, source: str):
        self.source = source

    def visit_Assert(self, node: ast.Assert):
        key = assert_key(ast.get_source_segment(self.source, node))
        operands = []
        if isinstance(node.test, ast.Compare):
            for side in [node.test.left, *node.test.comparators]:
                signed = side.args[0] if (isinstance(side, ast.Call) and isinstance(side.func, ast.Name)
                                          and side.func.id == "abs" and len(side.args) == 1) else side
                operands.append(signed)
        # operands are evaluated after the test; a failing one records None instead of stopping the cell
        values = ast.List([ast.Call(ast.Name("_seed_study_value", ast.Load()),
                                    [ast.Lambda(ast.arguments([], [], None, [], [], None, []), o)], [])
                           for o in operands], ast.Load())
        call = ast.Call(ast.Name("_seed_study_record", ast.Load()), [ast.Constant(key), node.test, values], [])
        return ast.copy_location(ast.Expr(call), node)


VALUE = '''
def _seed_study_value(fn):
    try:
        return fn()
    except Exception:
        return None
'''


def instrument(source: str) -> str:
    tree = ast.parse(source)
    if not any(isinstance(n, ast.Assert) for n in ast.walk(tree)):
        return source
    return ast.unparse(ast.fix_missing_locations(_Recording(source).visit(tree)))


def run_chapter(path: Path, seed: int, timeout: int) -> dict:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = instrument(cell.source)
    nb.cells.insert(0, nbformat.v4.new_code_cell(RECORDER + VALUE))
    nb.cells.append(nbformat.v4.new_code_cell(DUMP))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        env = {"PEFTLAB_SEED": str(seed), "SEED_STUDY_OUT": str(out), "OMP_NUM_THREADS": "1"}
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute(env={**os.environ, **env})  # the kernel's own environment: chapters may run side by side
        seconds = time.perf_counter() - start
        errors = [f"{o.ename}: {o.evalue}"[:300] for c in nb.cells if c.cell_type == "code"
                  for o in c.get("outputs", []) if o.output_type == "error"]
        records = json.loads(out.read_text()) if out.exists() else []
    return {"seconds": round(seconds, 1), "errors": errors, "records": records}


def _one(job, timeout):
    path, seed = job
    return path, seed, run_chapter(path, seed, timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("notebooks", nargs="*", help="file names in notebooks/ (default: chapters 00-08, which train)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=900, help="seconds one cell may take")
    args = parser.parse_intermixed_args()
    paths = [NOTEBOOKS / n for n in args.notebooks] or sorted(NOTEBOOKS.glob("0[0-8]_*.ipynb"))
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    report = {"command": "python benchmarks/chapter_seeds.py " + " ".join(sys.argv[1:]), "machine": machine(),
              "seeds": args.seeds, "chapters": {}}
    if args.out.exists():  # a run over some chapters adds to (or replaces) those chapters only
        previous = json.loads(args.out.read_text())
        report["chapters"] = previous.get("chapters", {})
        report["earlier_commands"] = previous.get("earlier_commands", []) + [previous["command"]]
    jobs = [(p, s) for s in args.seeds for p in paths]  # every chapter once before any twice: errors show early
    for p in paths:
        report["chapters"][p.stem] = {"seconds": {}, "errors": {}, "asserts": {}}

    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for path, seed, result in pool.map(_one, jobs, [args.timeout] * len(jobs)):
            chapter = report["chapters"][path.stem]
            chapter["seconds"][str(seed)] = result["seconds"]
            if result["errors"]:
                chapter["errors"][str(seed)] = result["errors"]
            for record in result["records"]:
                entry = chapter["asserts"].setdefault(record["assert"], {})
                entry.setdefault(str(seed), []).append({"held": record["held"], "values": record["values"]})
            failed = sorted({r["assert"][:70] for r in result["records"] if not r["held"]})
            print(f"{path.name:24s} seed {seed}: {result['seconds']:6.1f} s, {len(result['records'])} asserts run, "
                  f"{len(failed)} failed {failed if failed else ''}{' ERRORS ' + str(result['errors']) if result['errors'] else ''}",
                  flush=True)
            args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
