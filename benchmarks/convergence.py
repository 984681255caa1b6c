"""Methods compared where they end: every configuration of a study trained to convergence, over seeds.

    python benchmarks/convergence.py --study methods --out data/results/convergence_methods.json \
        --device cuda --workers 12 --commit "$(git rev-parse HEAD)"

For each method, learning rate and seed of the study, ``peftlab.study.experiments.run_to_convergence``
trains on the task until the validation loss stops improving (measured every ``--eval-every`` steps,
stopping after ``--patience`` evaluations without a new best), puts back the best checkpoint and
scores the test split. The output holds every run, curves included, with the command, the code's
commit, the versions, the hardware and the seeds; the chapters load it for their tables and plots,
choose each method's learning rate on the validation loss, and report the test split.

Runs already in ``--out`` are kept and skipped, so a study can be finished over several calls;
``--rerun-capped --max-steps N`` runs again, under the cap N, the selected runs (``--only``, ``--lrs``, ``--options``)
that reached a lower cap without converging (each run records its cap);
``--deadline`` stops starting new runs after that many seconds (the runs under way finish).
Calls made side by side, each on its own copy of ``--out`` (or each starting a new study from nothing, on its own
share of it), are put back together with ``--merge COPY ...`` (their new calls and runs added; runs a copy re-ran
under a higher cap replaced).
Each run is one process with one thread: a model this small gains little from more threads per run
and leaves a GPU idle between its small kernels, so runs side by side are what uses a machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import multiprocessing
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from peftlab.methods.names import (ADAPTER_AND_LORA, ADAPTER_HOULSBY, ADAPTER_PFEIFFER, DORA_PEFT, FULL_FINE_TUNING, IA3, LORA,
                                   LORA_QV, PROMPT_AND_LORA, PROMPT_TUNING, QLORA, QLORA_BASE_AND_ADAPTER)

# (method, learning rates, method options): each learning-rate grid brackets the best rate found by the
# course's short runs (chapters 03, 05, 06) by a factor of 10 or more on each side where the run allows.
STUDIES = {
    "methods": [
        (FULL_FINE_TUNING, (1e-4, 3e-4, 1e-3, 3e-3, 1e-2), {}),  # 1e-2: 3e-3 was best, at the grid's edge
        (LORA, (3e-4, 1e-3, 3e-3, 1e-2), {}),
        (QLORA, (3e-4, 1e-3, 3e-3, 1e-2), {}),
        (IA3, (1e-2, 3e-2, 1e-1, 3e-1), {}),
        (ADAPTER_HOULSBY, (3e-4, 1e-3, 3e-3, 1e-2), {}),
        (ADAPTER_PFEIFFER, (3e-4, 1e-3, 3e-3, 1e-2), {}),
        (PROMPT_TUNING, (1e-3, 3e-3, 3e-2, 3e-1), {}),
    ],
    # chapters 05-07: LoRA's scale at high and low rank (alpha/r vs rsLoRA's alpha/sqrt(r), alpha 16), q,v only,
    # DoRA, and the hybrids; their parts at r=8 on all linear layers are in "methods". Two rates around the
    # best of "methods" for LoRA (1e-3 and 3e-3 tie there).
    "variants": [
        (LORA, (1e-3, 3e-3), {"r": 1, "alpha": 16}),
        (LORA, (1e-3, 3e-3), {"r": 64, "alpha": 16}),
        (LORA, (1e-3, 3e-3), {"r": 64, "alpha": 16, "use_rslora": True}),
        (LORA_QV, (1e-3, 3e-3), {}),
        (DORA_PEFT, (1e-3, 3e-3), {}),
        (PROMPT_AND_LORA, (1e-3, 3e-3), {}),
        (ADAPTER_AND_LORA, (1e-3, 3e-3), {}),
        (QLORA_BASE_AND_ADAPTER, (1e-3, 3e-3), {}),
    ],
    # chapter 08's "where LoRA falls short", run with --task facts: 1,000 arbitrary facts to store, where the adapter's
    # capacity, not the skill, limits it. LoRA on all linear layers at r=1, 8 and 64 with alpha 16 (as in "variants"),
    # beside full fine-tuning. LoRA Without Regret finds LoRA's best rate about 10 times full fine-tuning's: LoRA's
    # rates run from 1 to 10 times full fine-tuning's lower one (3e-3 was its best on addition, 1e-3 one step below).
    # Run with --patience 10: storing facts starts on a plateau (every value equally likely) that can outlast 500 steps.
    "limits": [
        (FULL_FINE_TUNING, (1e-3, 3e-3), {}),
        (LORA, (1e-3, 3e-3, 1e-2), {"r": 1, "alpha": 16}),
        (LORA, (1e-3, 3e-3, 1e-2), {"r": 8, "alpha": 16}),
        (LORA, (1e-3, 3e-3, 1e-2), {"r": 64, "alpha": 16}),
    ],
}


def run_key(run: dict) -> tuple:
    return run["method"], run["task"], run["lr"], json.dumps(run["method_kwargs"], sort_keys=True), run["seed"]


def one_run(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from peftlab.study.experiments import run_to_convergence

    return run_to_convergence(**job)


def environment(device: str) -> dict:
    """The call's machine: library versions, and its hardware as chapter 08 reads it (cpu, cpu_count, device, gpu)."""
    from peftlab.course.measure import describe_machine

    described = describe_machine(device)
    return {"python": described["python"], "torch": described["torch"], "transformers": described["transformers"],
            "peft": described["peft"], "hardware": described}


def rounded(x):
    """Floats to 6 significant digits: what separates runs is in the second or third."""
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return x


def dump(record: dict) -> str:
    """The record as JSON: everything but the runs indented on top, then one run a line."""
    lists = [key for key in ("runs", "repeats") if key in record]
    head = json.dumps({k: v for k, v in record.items() if k not in lists}, indent=1)
    return head[:-2] + "".join(f',\n "{key}": [\n' + ",\n".join(json.dumps(rounded(run)) for run in record[key])
                               + "\n ]" for key in lists) + "\n}\n"


def summarize(runs: list[dict]) -> str:
    """Per method and rate: validation loss (mean, min-max over seeds) and test loss and accuracy."""
    from peftlab.study.results import configurations  # the chapters group runs the same way

    lines = [f"{'method':22s} {'lr':>7s} {'seeds':>5s} {'val loss (min-max)':>26s} {'test loss':>10s} "
             f"{'test acc':>9s} {'steps':>11s} capped"]
    for (method, lr), group in sorted(configurations(runs).items()):
        val = [r["val_loss"] for r in group]
        steps = [r["best_step"] for r in group]
        lines.append(f"{method:22s} {lr:7.0e} {len(group):5d} "
                     f"{statistics.mean(val):8.3f} ({min(val):.3f}-{max(val):.3f})  "
                     f"{statistics.mean(r['test_loss'] for r in group):10.3f} "
                     f"{statistics.mean(r['test_accuracy'] for r in group):9.1%} {min(steps):5d}-{max(steps):<5d} "
                     f"{sum(not r['stopped_early'] for r in group) or '':>3}")
    return "\n".join(lines)


def merge(out: Path, copies: list[Path]) -> str:
    """Put back into ``out`` what calls made on copies of it added: their calls, their new runs, and the
    capped runs they re-ran (which replace the stored ones). Every copy must start from ``out`` as it is (the same
    calls, told apart by when they started: a note added to a stored command since then does not matter). Where
    ``out`` does not exist yet, the copies are calls that started a study side by side from nothing: ``out`` starts as
    an empty study of theirs, with no calls and no runs."""
    if out.exists():
        record = json.loads(out.read_text())
    else:
        first = json.loads(copies[0].read_text())
        record = {"study": first["study"], "settings": first["settings"], "seeds": first["seeds"], "calls": [], "runs": []}
    known = len(record["calls"])
    replaced, added, calls = set(), [], []
    for copy in copies:
        other = json.loads(copy.read_text())
        same_calls = [c["started"] for c in other["calls"][:known]] == [c["started"] for c in record["calls"]]
        if not same_calls or other["settings"] != record["settings"] or other["study"] != record["study"]:
            raise SystemExit(f"{copy} was not made from {out} as it is now (calls, study or settings differ); "
                             f"merge copies of the current file only")
        kept = {(run_key(r), r["call"]) for r in other["runs"] if r["call"] < known}
        rerun = {run_key(r) for r in other["runs"] if r["call"] >= known}
        # a stored run the copy dropped was run again there; if that run never finished, the stored run stays
        replaced |= {(run_key(r), r["call"]) for r in record["runs"] if run_key(r) in rerun} - kept
        for run in other["runs"]:
            if run["call"] >= known:
                added.append({**run, "call": run["call"] + len(calls)})  # after the calls of earlier copies
        calls += other["calls"][known:]
    runs = [r for r in record["runs"] if (run_key(r), r["call"]) not in replaced]
    # Two copies may have run the same configuration and seed (say, one on the CPU and one on a GPU): the study
    # keeps the first and stores the others apart, under "repeats" -- the same seed on other hardware, which
    # shows how far floating-point differences alone move a run.
    seen = {run_key(r) for r in runs}
    repeats = []
    for run in added:
        (repeats if run_key(run) in seen else runs).append(run)
        seen.add(run_key(run))
    record["runs"] = runs
    record["calls"] += calls
    if repeats:
        record["repeats"] = record.get("repeats", []) + repeats
    out.write_text(dump(record))
    return (f"{len(added) - len(repeats)} runs added from {len(copies)} copies ({len(replaced)} capped runs "
            f"replaced, {len(repeats)} repeats of a stored seed kept apart); {len(calls)} calls")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--study", choices=sorted(STUDIES), required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--task", default="addition")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=4000, help="the cap of the runs this call makes")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--deadline", type=float, default=None, help="seconds after which no new run starts")
    p.add_argument("--only", nargs="*", default=None, help="run only these methods of the study")
    p.add_argument("--lrs", nargs="*", type=float, default=None, help="run only these learning rates")
    p.add_argument("--options", type=json.loads, default=None,
                   help='run only the configurations with these method options, as JSON: \'{"r": 1, "alpha": 16}\'')
    p.add_argument("--rerun-capped", action="store_true",
                   help="run again, under --max-steps, the selected runs that reached a lower cap")
    p.add_argument("--commit", default=None, help="the git commit of the code that ran (recorded in --out)")
    p.add_argument("--merge", nargs="+", type=Path, default=None,
                   help="add to --out the calls and runs of these copies of it, made by calls side by side")
    args = p.parse_args(argv)
    if args.merge:
        print(merge(args.out, args.merge))
        return 0

    settings = {"task": args.task, "eval_every": args.eval_every, "patience": args.patience,
                "batch_size": args.batch_size}
    stored = json.loads(args.out.read_text()) if args.out.exists() else None
    runs = stored["runs"] if stored else []
    if stored and stored["settings"] != settings:
        raise SystemExit(f"{args.out} holds runs made with other settings ({stored['settings']}); use another --out")

    def selected(method: str, lr: float, options: dict) -> bool:
        return (args.only is None or method in args.only) and (args.lrs is None or any(
            abs(lr - x) <= 1e-9 * x for x in args.lrs)) and (args.options is None or options == args.options)

    if args.rerun_capped:
        # A run that stopped early is the same under a higher cap (the batches and the learning-rate schedule do
        # not depend on it); a run that reached its cap had not converged, and runs again under the new one.
        capped = [r for r in runs if not r["stopped_early"] and r["max_steps"] < args.max_steps
                  and selected(r["method"], r["lr"], r["method_kwargs"])]
        runs = [r for r in runs if r not in capped]
        rerun = {run_key(r) for r in capped}
        print(f"{len(capped)} runs that reached a cap below {args.max_steps} run again", flush=True)
    done = {run_key(r) for r in runs}
    jobs = []
    for method, lrs, kwargs in STUDIES[args.study]:
        for lr in lrs:
            for seed in range(args.seeds):
                key = (method, args.task, lr, json.dumps(kwargs, sort_keys=True), seed)
                if selected(method, lr, kwargs) and key not in done:
                    jobs.append((key, dict(method=method, task=args.task, lr=lr, seed=seed, batch_size=args.batch_size,
                                     eval_every=args.eval_every, patience=args.patience, max_steps=args.max_steps,
                                     device=args.device, **kwargs)))
    if args.rerun_capped:  # the long runs start first, so that a deadline cuts the short ones
        jobs.sort(key=lambda key_job: key_job[0] not in rerun)
    jobs = [job for _, job in jobs]
    print(f"{len(runs)} runs stored, {len(jobs)} to run on {args.workers} workers ({args.device})", flush=True)

    record = {"study": args.study, "settings": settings, "seeds": list(range(args.seeds)),
              "calls": (stored or {}).get("calls", []), "runs": runs}
    command = "python " + shlex.join(sys.argv if argv is None else ["benchmarks/convergence.py", *argv])
    record["calls"].append({"command": command, "commit": args.commit,
                            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **environment(args.device)})
    start = time.time()
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        pending = {pool.submit(one_run, job): job for job in jobs}
        for future in futures.as_completed(pending):
            if future.cancelled():
                continue
            run = future.result()
            run["call"] = len(record["calls"]) - 1
            runs.append(run)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            partial = args.out.with_suffix(".partial")  # written whole, then renamed: a killed call loses no run
            partial.write_text(dump(record))
            partial.replace(args.out)
            print(f"[{time.time() - start:5.0f} s] {run['method']} lr {run['lr']:g} seed {run['seed']}: "
                  f"val {run['val_loss']:.3f} at step {run['best_step']}, test {run['test_loss']:.3f} "
                  f"({run['test_accuracy']:.1%}), {run['train_seconds']:.0f} s", flush=True)
            if args.deadline is not None and time.time() - start > args.deadline:
                cancelled = sum(f.cancel() for f in pending)
                if cancelled:
                    print(f"deadline: {cancelled} runs not started; call again to run them", flush=True)
    print(summarize(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
