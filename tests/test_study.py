"""Spreads over seeds, paired intervals over texts, and reading a stored convergence study."""

import math
from pathlib import Path

import pytest
import torch

from peftlab.course.stats import Spread, paired_interval
from peftlab.study import results as study

ROOT = Path(__file__).resolve().parents[1]


def test_spread_mean_range_interval_and_ties():
    s = Spread.of([0.95, 0.97, 0.92, 0.96, 0.94])
    assert s.n == 5 and s.mean == pytest.approx(0.948) and (s.low, s.high) == (0.92, 0.97)
    low, high = s.interval()
    half = 2.776 * math.sqrt(sum((v - 0.948) ** 2 for v in s.values) / 4) / math.sqrt(5)  # t(0.975, 4 dof)
    assert (low, high) == pytest.approx((0.948 - half, 0.948 + half))
    assert s.overlaps(Spread.of([0.97, 0.99])) and not s.overlaps(Spread.of([0.98, 0.99]))
    assert s.compare(Spread.of([0.97, 0.99])) == "not separated from"
    assert s.compare(Spread.of([0.98, 0.99])) == "loses to" and Spread.of([0.98, 0.99]).compare(s) == "beats"
    assert s.compare(Spread.of([0.98, 0.99]), higher_is_better=False) == "beats", "for losses, lower is better"
    assert f"{s:.2f}" == "0.95 (0.92-0.97)"
    with pytest.raises(ValueError, match="at least one value"):
        Spread.of([])
    with pytest.raises(ValueError, match="at least two seeds"):
        Spread.of([1.0]).interval()


def test_seed_by_seed_differences_show_the_gap_the_data_leave_open():
    a, b = Spread.of([0.90, 0.80, 0.95]), Spread.of([0.85, 0.88, 0.90])
    gap = a.difference(b)
    assert gap.values == pytest.approx((0.05, -0.08, 0.05)) and a.compare(b) == "not separated from"
    assert gap.low < 0 < gap.high, "the seeds disagree on the sign: the data leave both directions open"
    with pytest.raises(ValueError, match="same seeds on both sides"):
        a.difference(Spread.of([0.9]))


def test_paired_interval_separates_a_shift_and_not_noise():
    torch.manual_seed(0)
    tokens = torch.randint(10, 50, (300,)).double()
    a = torch.stack([tokens * 1.00, tokens], 1)
    b = torch.stack([tokens * 1.00 + torch.randn(300).double() * 0.01, tokens], 1)
    low, high = paired_interval(a, b)
    assert low < 0 < high, "the same losses up to noise: a tie"
    shifted = torch.stack([tokens * 1.05, tokens], 1)
    low, high = paired_interval(shifted, a)
    assert 0 < low <= 0.05 <= high
    with pytest.raises(ValueError, match="two \\(texts, 2\\) tables of the same texts"):
        paired_interval(a, a[:10])


def _run(method, lr, seed, val, test, curve, **kwargs):
    return {"method": method, "lr": lr, "seed": seed, "method_kwargs": kwargs, "val_loss": val, "test_loss": val,
            "test_accuracy": test, "val_accuracy": test, "best_step": 100, "steps_run": 200, "stopped_early": True,
            "trainable": 10, "curve": [{"step": s, "loss": loss} for s, loss in curve]}


RUNS = [_run("A", 1e-3, s, 0.5 + s / 100, 0.80, [(0, 2.0), (100, 1.0 + s / 10)]) for s in range(3)] + \
       [_run("A", 1e-2, s, 0.3 + s / 100, 0.90 + s / 100, [(0, 2.0), (100, 0.5)]) for s in range(3)] + \
       [_run("A", 1e-2, s, 0.9, 0.5, [(0, 2.0)], r=64) for s in range(2)]


def test_rates_are_chosen_on_validation_and_options_kept_apart():
    assert study.best_rates(RUNS) == {"A": 1e-2, "A r=64": 1e-2}
    table = study.decision_table(RUNS)
    assert table["A"]["seeds"] == 3 and table["A"]["test_accuracy"].mean == pytest.approx(0.91)
    assert table["A"]["capped"] == 0
    assert study.rate_spreads(RUNS, "A")[1e-3].mean == pytest.approx(0.51)
    assert set(study.rate_spreads(RUNS, "A r=64")) == {1e-2}
    with pytest.raises(ValueError, match="no runs of 'B'"):
        study.rate_spreads(RUNS, "B")


def test_a_live_curve_is_checked_against_the_stored_band():
    band = study.curve_band(RUNS, "A", 1e-3)
    assert band[100].low == pytest.approx(1.0) and band[100].high == pytest.approx(1.2)
    assert study.outside_band([{"step": 100, "loss": 1.1}], band) == []
    assert study.outside_band([{"step": 100, "loss": 1.3}], band) == [100]
    assert study.outside_band([{"step": 100, "loss": 1.205}], band, tolerance=0.01) == []
    with pytest.raises(ValueError, match="no runs of 'B'"):
        study.curve_band(RUNS, "B", 1e-3)
    with pytest.raises(ValueError, match="shares no evaluated step"):
        study.outside_band([{"step": 50, "loss": 1.0}], band)
    with pytest.raises(ValueError, match="no stored study 'nope'"):
        study.load_study("nope")


def test_the_stored_methods_study_is_complete_enough_to_read():
    runs = study.load_study("methods")["runs"]
    table = study.decision_table(runs)
    assert set(table) == {"full fine-tuning", "LoRA", "QLoRA", "IA3", "adapter (Houlsby)", "adapter (Pfeiffer)",
                          "prompt tuning"}
    assert all(len({r["seed"] for r in g}) == len(g) for g in study.configurations(runs).values()), "one run per seed"
    both = study.decision_tables("methods", "variants")
    assert set(table) < set(both) and both["LoRA"] == table["LoRA"] and "DoRA (peft)" in both
    with pytest.raises(ValueError, match="both hold"):
        study.decision_tables("methods", "methods")


def test_the_capacity_table_orders_rows_by_trainable_parameters_and_adds_validation_exact_match():
    runs = [{**r, "trainable": 640 if r["method_kwargs"] else 10} for r in RUNS]
    table = study.capacity_table(runs)
    assert list(table) == ["A", "A r=64"] and table["A"]["lr"] == 1e-2
    assert table["A"]["val_accuracy"].values == pytest.approx((0.90, 0.91, 0.92)), "the chosen rate's seeds"


def test_how_fast_seeds_reach_an_exact_match_is_read_from_their_validation_curves():
    group = [{"curve": [{"step": 0, "accuracy": 0.0}, {"step": 100, "accuracy": a}, {"step": 200, "accuracy": b}]}
             for a, b in [(0.5, 0.96), (0.95, 1.0)]]
    assert study.steps_to_accuracy(group, 0.95).values == (200, 100)
    assert study.accuracy_at_step(group, 100).values == (0.5, 0.95)
    with pytest.raises(ValueError, match="1 of 2 runs never reached exact match 0.99"):
        study.steps_to_accuracy(group, 0.99)
    with pytest.raises(ValueError, match="no evaluation at step 300"):
        study.accuracy_at_step(group, 300)


def test_the_stored_capacity_study_holds_five_seeds_of_each_configuration_on_the_facts_task():
    limits = study.load_study("limits")
    assert limits["settings"]["task"] == "facts"
    groups = study.configurations(limits["runs"])
    assert set(groups) == {(label, lr) for label, lrs in [("full fine-tuning", (1e-3, 3e-3))] + [
        (f"LoRA alpha=16 r={r}", (1e-3, 3e-3, 1e-2)) for r in (1, 8, 64)] for lr in lrs}
    assert all(sorted(r["seed"] for r in g) == [0, 1, 2, 3, 4] for g in groups.values()), "the five seeds, once each"
    assert [row["trainable"] for row in study.capacity_table(limits["runs"]).values()] == [9728, 77824, 622592, 993408]


def test_text_losses_are_what_the_language_modelling_loss_averages():
    from peftlab import load_base
    from peftlab.course.tasks import load_stories
    from peftlab.course.train import language_modelling_loss, text_losses

    model, tokenizer = load_base()
    stories = load_stories()[:3]
    rows = text_losses(model, tokenizer, stories)
    assert rows.shape == (3, 2) and rows.dtype == torch.float64 and bool((rows[:, 1] > 0).all())
    assert float(rows[:, 0].sum() / rows[:, 1].sum()) == pytest.approx(language_modelling_loss(model, tokenizer, stories))


def test_calls_made_side_by_side_merge_back_into_the_study(tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("convergence", ROOT / "benchmarks" / "convergence.py")
    convergence = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convergence)

    def run(method, seed, call, stopped_early=True):
        return {"method": method, "task": "addition", "lr": 0.001, "method_kwargs": {}, "seed": seed,
                "call": call, "stopped_early": stopped_early}

    head = {"study": "methods", "settings": {"task": "addition"}, "seeds": [0, 1]}
    out = tmp_path / "study.json"
    a, b, c = ({"command": x, "started": str(i)} for i, x in enumerate("abc"))  # calls are told apart by start
    out.write_text(convergence.dump({**head, "calls": [a],
                                     "runs": [run("LoRA", 0, 0, stopped_early=False), run("IA3", 0, 0),
                                              run("QLoRA", 0, 0, stopped_early=False)]}))
    rerun = tmp_path / "rerun.json"  # re-ran the capped LoRA run; its re-run of the capped QLoRA run never finished
    rerun.write_text(convergence.dump({**head, "calls": [a, b],
                                       "runs": [run("IA3", 0, 0), run("LoRA", 0, 1)]}))
    new = tmp_path / "new.json"  # added a seed
    new.write_text(convergence.dump({**head, "calls": [{**a, "command": "a  # a note added since"}, c],
                                     "runs": [run("LoRA", 0, 0, stopped_early=False), run("IA3", 0, 0),
                                              run("IA3", 1, 1)]}))
    again = tmp_path / "again.json"  # the same new seed, elsewhere
    again.write_text(convergence.dump({**head, "calls": [a, {**c, "started": "4"}],
                                       "runs": [run("LoRA", 0, 0, stopped_early=False), run("IA3", 0, 0),
                                                run("IA3", 1, 1)]}))
    convergence.merge(out, [rerun, new, again])
    merged = json.loads(out.read_text())
    assert [call["command"] for call in merged["calls"]] == ["a", "b", "c", "c"]
    assert sorted((r["method"], r["seed"], r["call"], r["stopped_early"]) for r in merged["runs"]) == [
        ("IA3", 0, 0, True), ("IA3", 1, 2, True), ("LoRA", 0, 1, True), ("QLoRA", 0, 0, False)]
    assert [(r["method"], r["seed"], r["call"]) for r in merged["repeats"]] == [("IA3", 1, 3)]

    stale = tmp_path / "stale.json"  # made from another state of the file
    stale.write_text(convergence.dump({**head, "calls": [{"command": "x", "started": "9"}, b], "runs": []}))
    with pytest.raises(SystemExit, match="not made from"):
        convergence.merge(out, [stale])

    fresh = tmp_path / "fresh.json"  # two calls that started a study side by side, each with its own share
    copies = [tmp_path / "cpu.json", tmp_path / "gpu.json"]
    for i, (copy, method) in enumerate(zip(copies, ["LoRA", "IA3"])):
        copy.write_text(convergence.dump({**head, "calls": [{"command": method, "started": str(i)}],
                                          "runs": [run(method, 0, 0), run(method, 1, 0)]}))
    convergence.merge(fresh, copies)
    merged = json.loads(fresh.read_text())
    assert [call["command"] for call in merged["calls"]] == ["LoRA", "IA3"] and merged["settings"] == head["settings"]
    assert sorted((r["method"], r["seed"], r["call"]) for r in merged["runs"]) == [
        ("IA3", 0, 1), ("IA3", 1, 1), ("LoRA", 0, 0), ("LoRA", 1, 0)]


def test_a_capped_configuration_could_change_the_choice_only_if_its_bound_beats_the_chosen_rate():
    def capped(run, cap=500):
        return {**run, "stopped_early": False, "max_steps": cap}

    # rate 1e-3 (mean 0.51) lost to 1e-2 (mean 0.31); one of its runs hit the cap
    runs = [capped(RUNS[0])] + RUNS[1:6]
    (entry,) = study.capped_configurations(runs, study.decision_table(runs))
    assert (entry["method"], entry["lr"], entry["capped"], entry["seeds"], entry["cap"]) == ("A", 1e-3, 1, 3, 500)
    # the capped run (0.50) replaced by the lowest loss at any rate (0.30): (0.30 + 0.51 + 0.52) / 3
    assert entry["bound"] == pytest.approx(1.33 / 3) and entry["chosen"] == pytest.approx(0.31)
    assert not entry["could_change"]
    # all three capped: (0.30 * 3) / 3 = 0.30 < 0.31, so training on could change the choice
    runs = [capped(r) for r in RUNS[:3]] + RUNS[3:6]
    (entry,) = study.capped_configurations(runs, study.decision_table(runs))
    assert entry["could_change"] and entry["bound"] == pytest.approx(0.30)
    assert study.capped_configurations(RUNS[:6], study.decision_table(RUNS[:6])) == []


def test_one_stored_gpu_measurement_is_found_by_its_fields_or_the_lookup_says_why_not():
    rows = study.gpu_memory_rows()
    row = study.find_row(rows, model="Llama-3.2-1B", recipe="peft QLoRA", method="QLoRA", batch=1, seq=512,
                         gradient_checkpointing=True, optimizer="torch AdamW")
    assert row["peak_bytes"] > 0
    with pytest.raises(ValueError, match="stored rows have model='Llama-3.2-1B'; give the fields that pick exactly one"):
        study.find_row(rows, model="Llama-3.2-1B")
    with pytest.raises(ValueError, match="0 stored rows"):
        study.find_row(rows, model="no such model")
    runs = study.multi_gpu_runs()
    assert set(runs["runs"]) == set(runs["comparisons"]) == {"lora", "qlora"}
