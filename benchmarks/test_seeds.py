"""Run the tests that assert a training result under several seeds, and store which passed: the evidence that their
thresholds clear the seed spread (docs/asserts.md, class c).

    python benchmarks/test_seeds.py data/results/test_seeds.json [--seeds 0 1 2 3 4] [--jobs 2]

The tests marked ``seeded`` train with ``course_seed()``; this runs ``pytest -m seeded`` once per seed with
``PEFTLAB_SEED`` set (offline, one PyTorch thread per worker, as ``make test`` runs them) and writes, for each test,
the outcome under every seed. ``tests/test_assert_inventory.py`` requires every seeded test to have passed for
every stored seed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from book_times import ROOT, machine  # noqa: E402


def outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed / failed / skipped, from pytest's JUnit XML."""
    found = {}
    for case in ET.parse(junit).iter("testcase"):
        if not case.get("classname"):  # a module skipped as a whole (the browser test without chromium): no test ran
            continue
        module = case.get("classname", "").replace(".", "/")
        node = f"{module}.py::{case.get('name')}"
        kinds = {child.tag for child in case}
        found[node] = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    report = {"command": "python benchmarks/test_seeds.py " + " ".join(sys.argv[1:]), "machine": machine(),
              "seeds": args.seeds, "tests": {}}
    if args.out.exists():  # a run over some seeds adds to (or replaces) those seeds only
        previous = json.loads(args.out.read_text())
        report["tests"] = previous["tests"]
        report["seeds"] = sorted(set(previous["seeds"]) | set(args.seeds))
        report["earlier_commands"] = previous.get("earlier_commands", []) + [previous["command"]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            junit = Path(tmp) / "junit.xml"
            subprocess.run([sys.executable, "-m", "pytest", "-m", "seeded", "-q", "-p", "no:cacheprovider",
                            "-n", str(args.jobs), f"--junitxml={junit}", "tests"],
                           cwd=ROOT, env={**env, "PEFTLAB_SEED": str(seed)}, check=False)
            for node, outcome in outcomes(junit).items():
                report["tests"].setdefault(node, {})[str(seed)] = outcome
        failed = sorted(n for n, runs in report["tests"].items() if runs.get(str(seed)) != "passed")
        print(f"seed {seed}: {len(report['tests'])} seeded tests, failed: {failed or 'none'}", flush=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
