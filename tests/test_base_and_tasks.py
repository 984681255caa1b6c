"""The bundled model, the tasks and the scripts that build them (data/make/): offline, reproducible, and as described."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from peftlab import course_seed  # 0 unless PEFTLAB_SEED: benchmarks/test_seeds.py runs these tests with seeds 0-4
from peftlab.course import tasks
from peftlab.course.data import data_path
from peftlab.course.model import bundled_model, load_base
from peftlab.course.train import TrainConfig, evaluate, train

BUNDLED_MODEL = bundled_model()

# The builders are scripts outside the package that import each other as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data" / "make"))
import base_model  # noqa: E402
import corpus  # noqa: E402
import task_files  # noqa: E402


@pytest.fixture(scope="module")
def base():
    return load_base()


def test_bundled_model_is_a_llama_with_llama_module_names(base):
    model, tokenizer = base
    assert type(model).__name__ == "LlamaForCausalLM"
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names
    assert tokenizer.bos_token and tokenizer.eos_token and tokenizer.pad_token


def test_bundled_files_are_small_and_safetensors():
    files = list(BUNDLED_MODEL.iterdir())
    assert sum(f.stat().st_size for f in files) < 20e6
    assert (BUNDLED_MODEL / "model.safetensors").exists()
    assert not any(f.suffix in (".bin", ".pt", ".pkl") for f in files)


def test_model_card_matches_training_log():
    log = json.loads((BUNDLED_MODEL / "train_log.json").read_text())
    card = (BUNDLED_MODEL / "README.md").read_text()
    for key in ("val_loss", "unigram_val_loss"):
        assert str(log[key]) in card
    assert f"{log['parameters']:,}" in card
    assert log["val_loss"] < log["unigram_val_loss"]


def test_bundled_parameter_count_matches_card(base):
    model, _ = base
    log = json.loads((BUNDLED_MODEL / "train_log.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == log["parameters"]


def test_task_files_are_reproduced_byte_for_byte(tmp_path):
    task_files.write_task_files(tmp_path)
    for name in tasks.TASK_NAMES + tasks.MEMORY_TASKS:
        for split in tasks.SPLIT_SIZES:
            shipped = data_path("tasks", name, f"{split}.jsonl").read_bytes()
            assert (tmp_path / name / f"{split}.jsonl").read_bytes() == shipped, f"{name}/{split} drifted"


def test_held_out_stories_are_reproduced_byte_for_byte_and_are_the_cards_validation_split(tmp_path):
    corpus.write_validation_stories(tmp_path / "validation.jsonl")
    assert (tmp_path / "validation.jsonl").read_bytes() == data_path("stories", "validation.jsonl").read_bytes()
    seed = json.loads((BUNDLED_MODEL / "train_log.json").read_text())["config"]["seed"]
    assert tasks.load_stories(5) == corpus.generate_documents(5, seed=seed + corpus.VALIDATION_SEED_OFFSET)
    assert len(tasks.load_stories()) == corpus.SHIPPED_STORIES


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_splits_are_disjoint_and_answers_correct(name):
    splits = {s: tasks.load_task(name, s) for s in tasks.SPLIT_SIZES}
    prompts = [set(r["prompt"] for r in rows) for rows in splits.values()]
    assert sum(len(p) for p in prompts) == len(set().union(*prompts))
    for row in splits["test"]:
        if name == "addition":
            a, b = row["prompt"].rstrip("=").split("+")
            assert int(row["answer"]) == int(a) + int(b)
        if name == "reverse":
            words = row["prompt"].removeprefix("reverse: ").removesuffix(" ->").split()
            assert row["answer"].split() == words[::-1]


def test_facts_are_arbitrary_and_the_held_splits_are_disjoint_samples_of_the_training_facts(base):
    _, tokenizer = base
    splits = {s: tasks.load_task("facts", s) for s in tasks.SPLIT_SIZES}
    train = {row["prompt"]: row["answer"] for row in splits["train"]}
    assert len(train) == len(splits["train"]) == task_files.FACTS, "one answer per key"
    held = [{row["prompt"] for row in splits[s]} for s in ("validation", "test")]
    assert all(row in splits["train"] for s in ("validation", "test") for row in splits[s]), "memorization: held = trained"
    assert not held[0] & held[1] and [len(h) for h in held] == [tasks.SPLIT_SIZES["validation"], tasks.SPLIT_SIZES["test"]]
    # each key is three one-token words and '#', each value two digit tokens: short, so a run costs what addition's does
    assert {len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in train} == {5}
    assert {len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in train.values()} == {2}
    assert len(set(train.values())) == 100, "values spread over 00-99, independent of the key"
    with pytest.raises(ValueError, match="at least 600 facts"):
        task_files.generate_facts(599)


def test_task_formats_never_occur_in_the_corpus():
    text = " ".join(corpus.generate_documents(3000, seed=0))
    assert "sentiment:" not in text and "+" not in text and "->" not in text and "#" not in text


def test_bad_task_and_split_names():
    with pytest.raises(ValueError, match="sentiment, addition, reverse"):
        tasks.load_task("summarise")
    with pytest.raises(ValueError, match="train, validation, test"):
        tasks.load_task("addition", "dev")


def test_base_model_fails_the_tasks_zero_shot(base):
    model, tokenizer = base
    for name in tasks.TASK_NAMES:
        assert evaluate(model, tokenizer, tasks.load_task(name, "validation"))["accuracy"] < 0.05


@pytest.mark.seeded
def test_exact_match_equals_greedy_generation(base):
    """evaluate()'s teacher-forced exact match is what greedy decoding produces."""
    from peftlab.methods.lora import LoraConfig, add_lora

    model, tokenizer = load_base()
    torch.manual_seed(course_seed())
    add_lora(model, LoraConfig(r=8, target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                    "down_proj")))
    train(model, tokenizer, tasks.load_task("addition"), TrainConfig(steps=120, seed=course_seed(), progress=False))
    rows = tasks.load_task("addition", "validation")[:40]
    greedy = []
    for row in rows:
        ids = tokenizer(row["prompt"], return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        new = out[0, ids.shape[1]:].tolist()
        expected = tokenizer(row["answer"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        greedy.append(new[: len(expected)] == expected)
    per_example = [evaluate(model, tokenizer, [row])["accuracy"] == 1.0 for row in rows]
    assert per_example == greedy
    assert 0 < sum(greedy) < len(rows), "a mix of right and wrong answers makes this comparison meaningful"


def test_load_base_offline_and_from_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    log = base_model.pretrain(base_model.PRESETS["tiny"], tmp_path / "tiny", log_every=1000)
    model, tokenizer = load_base(tmp_path / "tiny")
    assert sum(p.numel() for p in model.parameters()) == log["parameters"]
    assert tokenizer.decode(tokenizer("anna had 3 cats.").input_ids, skip_special_tokens=True) == "anna had 3 cats."


@pytest.mark.seeded
def test_tiny_pretraining_runs_and_learns(tmp_path):
    preset = dataclasses.replace(base_model.PRESETS["tiny"], seed=course_seed())
    log = base_model.pretrain(preset, tmp_path, log_every=1000, device="cpu")
    for f in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md", "train_log.json"):
        assert (tmp_path / f).exists(), f
    assert log["history"][-1]["train_loss"] < log["history"][0]["train_loss"] - 1.0
    assert log["val_loss"] < log["unigram_val_loss"]
    again = base_model.pretrain(preset, tmp_path / "again", log_every=1000, device="cpu")
    assert again["val_loss"] == log["val_loss"], "same seed, same CPU run: the same computation"


def test_missing_bundled_model_says_how_to_fix(monkeypatch, tmp_path):
    import peftlab.course.model

    monkeypatch.setenv("PEFTLAB_DATA", str(tmp_path))  # set after import: the model moves with the tasks
    with pytest.raises(FileNotFoundError, match="data/make/base_model.py"):
        peftlab.course.model.load_base()


def test_load_base_says_when_a_path_is_no_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such folder: /no/such/model"):
        load_base("/no/such/model")
    with pytest.raises(FileNotFoundError, match=r"is not a model folder: it has no config.json"):
        load_base(tmp_path)
    model, tokenizer = load_base()
    with pytest.raises(ValueError, match="evaluate got no examples"):
        evaluate(model, tokenizer, [])
    with pytest.raises(ValueError, match="batch_size must be a whole number of at least 1, got 0"):
        evaluate(model, tokenizer, tasks.load_task("addition", "validation")[:2], batch_size=0)


def test_examples_limits_and_hub_ids_are_checked_where_they_enter(monkeypatch):
    from peftlab.course.train import TrainConfig, train

    with pytest.raises(ValueError, match=r"limit must be a whole number of at least 0 \(or None: all\), got -1"):
        tasks.load_task("addition", limit=-1)  # it sliced [:-1]: every example but the last
    model, tokenizer = load_base()
    for run in (lambda: evaluate(model, tokenizer, ["1+1="]),
                lambda: train(model, tokenizer, [{"prompt": "1+1=", "answer": 2}], TrainConfig(steps=1, progress=False))):
        with pytest.raises(ValueError, match=r"example 0 is .*each example is a dict with a 'prompt' and an 'answer' string"):
            run()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"someone/nothing is not a local folder, and the hub is switched off"):
        load_base("someone/nothing")
