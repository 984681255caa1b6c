"""Read a stored convergence study: each method at its best learning rate, over seeds, with spreads.

    study = load_study("methods")            # data/results/convergence_methods.json
    rates = best_rates(study["runs"])        # method -> rate with the lowest mean validation loss
    table = decision_table(study["runs"])    # method -> test exact match and loss, as Spreads over seeds
    table = decision_tables("methods", "variants")  # the same, over several studies
    capacity_table(load_study("limits")["runs"])  # chapter 08's capacity study: rows by trainable parameters
    steps_to_accuracy(group, 0.95), accuracy_at_step(group, 2000)  # how fast a configuration's seeds store facts
    capped_configurations(runs, table)       # could runs that hit their step cap change the chosen rate?
    find_row(gpu_memory_rows(), model="Llama-3.2-1B", method="QLoRA", ...)  # one measured GPU peak

``benchmarks/convergence.py`` made the runs (every run trained until its validation loss stopped
improving, its best checkpoint scored on the test split). The rate is chosen on the validation
split only; the test split is read once, for the chosen rate. Two methods tie when the ranges of
their test scores over seeds overlap (``Spread.compare``).
"""

from __future__ import annotations

import json

from peftlab.course.data import data_path
from peftlab.course.stats import Spread


def load_study(name: str) -> dict:
    """The stored study ``data/results/convergence_<name>.json``: settings, calls, runs."""
    path = data_path("results", f"convergence_{name}.json")
    if not path.is_file():
        raise ValueError(f"no stored study {name!r} at {path}; make it with benchmarks/convergence.py --study {name}")
    return json.loads(path.read_text())


def label(run: dict) -> str:
    """A run's configuration without its rate: the method, and its options if any ("LoRA r=64 alpha=16")."""
    options = " ".join(f"{k}={v}" for k, v in sorted(run["method_kwargs"].items()))
    return f"{run['method']} {options}" if options else run["method"]


def configurations(runs: list[dict]) -> dict[tuple[str, float], list[dict]]:
    """(label, learning rate) -> its runs, one per seed."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for run in runs:
        groups.setdefault((label(run), run["lr"]), []).append(run)
    return groups


def best_rates(runs: list[dict]) -> dict[str, float]:
    """Each configuration's (``label``) learning rate with the lowest mean validation loss over its seeds."""
    best: dict[str, tuple[float, float]] = {}
    for (method, lr), group in configurations(runs).items():
        loss = Spread.of(r["val_loss"] for r in group).mean
        if method not in best or loss < best[method][1]:
            best[method] = (lr, loss)
    return {method: lr for method, (lr, _) in best.items()}


def decision_table(runs: list[dict]) -> dict[str, dict]:
    """Per configuration (``label``), at its best rate: the rate, seeds, test accuracy and loss, validation loss and the step
    of the best checkpoint (Spreads over seeds), trainable parameters, and how many runs reached their step
    cap without converging."""
    groups = configurations(runs)
    table = {}
    for method, lr in best_rates(runs).items():
        group = groups[method, lr]
        table[method] = {"lr": lr, "seeds": len(group), "trainable": group[0]["trainable"],
                         "test_accuracy": Spread.of(r["test_accuracy"] for r in group),
                         "test_loss": Spread.of(r["test_loss"] for r in group),
                         "val_loss": Spread.of(r["val_loss"] for r in group),
                         "best_step": Spread.of(r["best_step"] for r in group),
                         "capped": sum(not r["stopped_early"] for r in group)}
    return table


def capacity_table(runs: list[dict]) -> dict[str, dict]:
    """``decision_table`` ordered by trainable parameters (fewest first), each row with its validation exact match
    too (a Spread over seeds, at the chosen rate): chapter 08's capacity study (``limits``), on a task whose held
    splits are samples of the training facts, where both exact matches count facts the model has stored."""
    table = decision_table(runs)
    groups = configurations(runs)
    rows = {config: {**row, "val_accuracy": Spread.of(r["val_accuracy"] for r in groups[config, row["lr"]])}
            for config, row in table.items()}
    return dict(sorted(rows.items(), key=lambda item: item[1]["trainable"]))


def steps_to_accuracy(group: list[dict], accuracy: float) -> Spread:
    """Over the runs of one configuration (one per seed): the first evaluated step at which each run's validation
    exact match reached ``accuracy``. How fast a method stores what it stores, where its final score ties (a run that
    never reached it is a ValueError: its step is unknown, not the cap)."""
    steps = [next((p["step"] for p in run["curve"] if p["accuracy"] >= accuracy), None) for run in group]
    if None in steps:
        raise ValueError(f"{steps.count(None)} of {len(steps)} runs never reached exact match {accuracy:g}")
    return Spread.of(steps)


def accuracy_at_step(group: list[dict], step: int) -> Spread:
    """Over the runs of one configuration: validation exact match at ``step`` (an evaluated step every run reached)."""
    found = [next((p["accuracy"] for p in run["curve"] if p["step"] == step), None) for run in group]
    if None in found:
        raise ValueError(f"{found.count(None)} of {len(found)} runs have no evaluation at step {step}")
    return Spread.of(found)


def verdict(table: dict[str, dict], a: str, b: str, metric: str = "test_accuracy") -> str:
    """The course's verdict (``Spread.compare``: "beats", "loses to" or "not separated from") on two rows of a
    ``decision_table``, by test exact match unless told (a metric ending in "loss": lower is better)."""
    return table[a][metric].compare(table[b][metric], higher_is_better=not metric.endswith("loss"))


def capped_configurations(runs: list[dict], table: dict[str, dict]) -> list[dict]:
    """The configurations, at every rate, with runs that reached their step cap, and whether training them on could
    change the rate ``table`` (``decision_table(runs)``) chose.

    A capped run had not converged: its loss at the cap is not its last word. Suppose each went on to reach the
    lowest validation loss its configuration reached at any rate (more than a run this slow is likely to reach): if
    the mean is still worse than the chosen rate's, further training would not change the choice. Each entry:
    ``method`` (the ``label``), ``lr``, ``capped`` and ``seeds`` (runs), ``cap`` (the largest step cap), ``mean`` (the
    mean validation loss as the runs stopped), ``bound`` (the mean with each capped run at that lowest loss),
    ``chosen`` (the chosen rate's mean) and ``could_change`` (``bound < chosen``)."""
    lowest: dict[str, float] = {}
    for run in runs:
        lowest[label(run)] = min(lowest.get(label(run), float("inf")), run["val_loss"])
    entries = []
    for (method, lr), group in sorted(configurations(runs).items()):
        capped = [r for r in group if not r["stopped_early"]]
        if not capped:
            continue
        mean = sum(r["val_loss"] for r in group) / len(group)
        bound = sum(r["val_loss"] if r["stopped_early"] else lowest[method] for r in group) / len(group)
        chosen = table[method]["val_loss"].mean
        entries.append({"method": method, "lr": lr, "capped": len(capped), "seeds": len(group),
                        "cap": max(r["max_steps"] for r in capped), "mean": mean, "bound": bound, "chosen": chosen,
                        "could_change": bound < chosen})
    return entries


def decision_tables(*names: str) -> dict[str, dict]:
    """``decision_table`` of several stored studies together (configurations are told apart by ``label``)."""
    table: dict[str, dict] = {}
    for name in names:
        rows = decision_table(load_study(name)["runs"])
        if shared := set(rows) & set(table):
            raise ValueError(f"studies {names} both hold {sorted(shared)}; read them one at a time")
        table.update(rows)
    return table


def rate_spreads(runs: list[dict], config: str) -> dict[float, Spread]:
    """One configuration's validation loss over seeds at each learning rate of the study."""
    spreads = {lr: Spread.of(r["val_loss"] for r in group)
               for (name, lr), group in configurations(runs).items() if name == config}
    if not spreads:
        raise ValueError(f"no runs of {config!r} in this study")
    return spreads


def curve_band(runs: list[dict], config: str, lr: float) -> dict[int, Spread]:
    """Validation loss at each evaluated step over the seeds of one configuration (only steps every seed reached)."""
    group = configurations(runs).get((config, lr))
    if not group:
        raise ValueError(f"no runs of {config!r} at lr {lr:g} in this study")
    steps = set.intersection(*({point["step"] for point in run["curve"]} for run in group))
    return {step: Spread.of(point["loss"] for run in group for point in run["curve"] if point["step"] == step)
            for step in sorted(steps)}


def outside_band(curve: list[dict], band: dict[int, Spread], tolerance: float = 0.0) -> list[int]:
    """The steps of a (live) validation curve whose loss falls outside the stored seeds' range, give or take
    ``tolerance`` nats (floating point differs between CPUs); an empty list means the run lies inside."""
    shared = [point for point in curve if point["step"] in band]
    if not shared:
        raise ValueError("the curve shares no evaluated step with the stored runs")
    return [p["step"] for p in shared
            if not band[p["step"]].low - tolerance <= p["loss"] <= band[p["step"]].high + tolerance]


# ----------------------------------------------------------------------------------------------------------------
# GPU measurements (one H200): benchmarks/gpu_memory.py and benchmarks/multi_gpu.py wrote them, with their commands


def _stored(name: str) -> dict:
    path = data_path("results", name)
    if not path.is_file():
        raise ValueError(f"no stored measurements at {path}; benchmarks/ has the script that makes {name}")
    return json.loads(path.read_text())


def gpu_memory_rows() -> list[dict]:
    """The training steps measured by ``benchmarks/gpu_memory.py`` (``data/results/gpu_memory.json``), one dict each:
    ``model``, ``method``, ``recipe``, ``optimizer``, ``dtype``, ``seq``, ``batch``, ``gradient_checkpointing``, ``set``
    (calibration or held out) and ``peak_bytes``, or ``out_of_memory`` for a step that did not fit."""
    return _stored("gpu_memory.json")["rows"]


def find_row(rows: list[dict], **fields) -> dict:
    """The one row whose fields equal ``fields`` (``find_row(rows, model="Llama-3.2-1B", seq=512, ...)``); none or
    several is a ValueError naming the fields, so that a lookup cannot silently read the wrong measurement."""
    found = [row for row in rows if all(row.get(key) == value for key, value in fields.items())]
    if len(found) != 1:
        wanted = ", ".join(f"{key}={value!r}" for key, value in fields.items())
        raise ValueError(f"{len(found)} stored rows have {wanted}; give the fields that pick exactly one")
    return found[0]


def multi_gpu_runs() -> dict:
    """``peftlab finetune`` on one GPU and on two (``benchmarks/multi_gpu.py``, ``data/results/multi_gpu.json``):
    ``runs[method][gpus]`` (throughput, per-GPU peaks, the calculator's estimate) and ``comparisons[method]``."""
    return _stored("multi_gpu.json")
