"""The production recipe (peftlab.production.finetune, ``peftlab finetune``): Trainer + peft + datasets.

The two-process run is real: ``accelerate launch`` starts two training processes on the CPU (gloo),
each with half of every global batch. Its adapter must equal that of one process with the whole
batch, and of one process accumulating two half batches; only rank 0 may write files.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file

from peftlab.course.model import load_base
from peftlab.course.tasks import load_task
from peftlab.course.train import collate
from peftlab.methods import lora
from peftlab.production.finetune import FinetuneConfig, load_examples
from peftlab.cli import main

ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)
STEPS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _uneven_answers(folder: Path) -> Path:
    """A user's JSONL whose answers differ in length (1 to 3 words of the reverse task's), so that averaging the loss
    per process instead of over the global batch's tokens would show (the course's tasks have nearly even answers)."""
    rows = [{"prompt": ex["prompt"], "answer": " " + " ".join(ex["answer"].split()[: 1 + i % 3])}
            for i, ex in enumerate(load_task("reverse", limit=400))]
    path = folder / "uneven.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _run(args: list[str], out: Path, audit: Path, launcher: list[str]) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "write_audit"), str(ROOT)]),
           "PEFTLAB_WRITE_AUDIT": str(audit)}
    audit.mkdir()
    command = launcher + ["-m", "peftlab", "finetune", "--data", str(out.parent / "uneven.jsonl"), "--output", str(out),
                          "--steps", str(STEPS), "--no-progress"] + args
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=out.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _writes(audit: Path) -> tuple[set[str], dict[str, set[str]]]:
    """The ranks that started, and the files each rank wrote."""
    started, written = set(), {}
    for record in audit.glob("writes-*.txt"):
        for line in record.read_text().splitlines():
            kind, rank, *path = line.split(" ", 2)
            if kind == "start":
                started.add(rank)
            else:
                written.setdefault(rank, set()).add(path[0])
    return started, written


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 6 steps of global batch 8 (uneven answers) three ways: two processes x 4, one x 8, one x 4 x 2 accumulated."""
    base = tmp_path_factory.mktemp("finetune")
    _uneven_answers(base)
    accelerate = [str(PYTHON.parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                  "--main_process_port", str(_free_port())]
    _run(["--batch-size", "4"], base / "two", base / "audit-two", accelerate)
    _run(["--batch-size", "8"], base / "one", base / "audit-one", [str(PYTHON)])
    _run(["--batch-size", "4", "--accumulate", "2"], base / "accumulated", base / "audit-accumulated", [str(PYTHON)])
    return base


def test_two_processes_train_the_adapter_one_process_trains_on_the_same_global_batch(runs):
    two = load_file(runs / "two" / "adapter_model.safetensors")
    summary = json.loads((runs / "two" / "finetune.json").read_text())
    assert summary["processes"] == 2 and summary["global_batch"] == 8 and len(summary["log"]) == STEPS
    for other in ("one", "accumulated"):
        theirs = load_file(runs / other / "adapter_model.safetensors")
        assert json.loads((runs / other / "finetune.json").read_text())["global_batch"] == 8
        assert two.keys() == theirs.keys() and len(two) == 2 * 7 * 4  # A and B, 7 linear layers, 4 blocks
        moved = max(float(t.abs().max()) for k, t in theirs.items() if "lora_B" in k)
        assert moved > 1e-3, "the adapter did not train: B is still zero"
        for key in two:
            assert torch.allclose(two[key], theirs[key], atol=1e-5, rtol=1e-4), f"{other}: {key} differs"


def test_only_rank_0_writes_files(runs):
    """Each process may write scratch files (locks of the datasets cache, temporary files); into the output folder
    only rank 0 writes, and it wrote every file there."""
    from peftlab.production.finetune import partial_folder

    out = (runs / "two").resolve()
    started, written = _writes(runs / "audit-two")
    assert {"0", "1"} <= started, f"both training processes should have run; started: {sorted(started)}"
    # a run writes into the partial folder beside the output, renamed onto it once finished
    places = {out, partial_folder(out)}
    inside = {rank: {Path(p).name for p in paths if Path(p).resolve().parent in places} for rank, paths in written.items()}
    assert not inside.get("1"), f"rank 1 wrote {sorted(inside['1'])}"
    files = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "finetune.json"} <= files
    assert files == inside["0"], "every saved file was written by rank 0"


def test_the_recipes_adapter_loads_in_peft_and_in_the_course_lora(runs):
    """What Trainer + peft saved computes the same through peft and through the course's scratch LoRA."""
    examples = load_task("reverse", "validation", limit=8)
    base, tokenizer = load_base()
    batch = collate(tokenizer, examples)
    with torch.no_grad():
        through_peft = peft.PeftModel.from_pretrained(base, runs / "two").eval()(input_ids=batch["input_ids"]).logits
        scratch, _ = load_base()
        lora.load_lora(scratch, runs / "two")
        through_scratch = scratch(input_ids=batch["input_ids"]).logits
        plain, _ = load_base()
        assert not torch.equal(plain(input_ids=batch["input_ids"]).logits, through_peft), "the adapter changes the model"
    assert torch.allclose(through_scratch, through_peft, atol=1e-5)


def _fail(capsys, *args) -> str:
    assert main(["finetune", "--steps", "1", "--no-progress", *args]) == 2
    return capsys.readouterr().err


def test_bad_input_gets_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = str(tmp_path / "out")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "1+1=", "answer": "2"}) + "\n")
    error = _fail(capsys, "--data", str(rows), "--output", out)
    assert "no column 'prompt'" in error and "['question', 'answer']" in error and "--prompt-column" in error
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "is empty" in _fail(capsys, "--data", str(empty), "--output", out)
    assert "neither a course task" in _fail(capsys, "--data", "additon", "--output", out)
    error = _fail(capsys, "--data", "addition", "--output", out, "--model", "someone/no-such-model")
    assert "--model someone/no-such-model is not a local folder" in error and "HF_HUB_OFFLINE" in error
    assert not Path(out).exists(), "nothing is written for a run that could not start"


def test_a_csv_with_other_column_names_reads_as_text(tmp_path):
    table = tmp_path / "sums.csv"
    table.write_text("question,result\n41+17=,58\n2+2=,4\n")
    rows = load_examples(FinetuneConfig(data=str(table), prompt_column="question", answer_column="result"))
    assert rows.column_names == ["prompt", "answer"]
    assert [rows[0]["prompt"], rows[0]["answer"]] == ["41+17=", "58"]  # text, though the CSV reader saw a number


def test_qlora_trains_over_bitsandbytes_nf4_weights(tmp_path):
    """--method qlora: the frozen linear layers are bitsandbytes' 4-bit ones, LoRA trains on them, peft loads the result."""
    import bitsandbytes as bnb

    from peftlab.production.finetune import finetune, load_model

    config = FinetuneConfig(data="sentiment", output_dir=str(tmp_path / "q"), method="qlora", steps=3, batch_size=4,
                            progress=False)
    model, _ = load_model(config)
    quantized = [name for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 7 * 4, "every linear layer of the 4 blocks is in NF4"
    summary = finetune(config)
    assert summary["global_batch"] == 4 and len(summary["log"]) == 3
    saved = json.loads((tmp_path / "q" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and set(saved["target_modules"]) == set(config.target_modules)
    tensors = load_file(tmp_path / "q" / "adapter_model.safetensors")
    assert any(float(t.abs().max()) > 0 for k, t in tensors.items() if "lora_B" in k), "B moved from zero"


# --- a user's data and folders ----------------------------------------------------------------------------------

def _examples(tmp_path, name, text, **columns):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return load_examples(FinetuneConfig(data=str(path), **columns))


def test_every_cell_is_read_as_written(tmp_path):
    rows = _examples(tmp_path, "a.csv", "prompt,answer\nagent,007\nhalf,0.50\nlist,\"[1, 2]\"\n")
    assert rows["answer"] == ["007", "0.50", "[1, 2]"], "no type guessing: the text of each cell"
    rows = _examples(tmp_path, "a.jsonl", '{"prompt": "p", "answer": 1.50}\n{"prompt": "q", "answer": "x"}\n')
    assert rows["answer"] == ["1.50", "x"], "a JSON number keeps its own text"
    rows = _examples(tmp_path, "b.jsonl", '{"prompt": "p", "answer": "null"}\n{"prompt": "q", "answer": "NaN"}\n')
    assert rows["answer"] == ["null", "NaN"], "in JSON, a string is text whatever it says (only CSV has no null)"
    long = "1+" * 100_000  # longer than the csv module's default field limit (131,072 characters)
    rows = _examples(tmp_path, "long.csv", f"prompt,answer\n{long},2\n")
    assert rows["prompt"] == [long], "a long cell is read whole (--max-length judges it later)"


@pytest.mark.parametrize("name, text, says", [
    ("empty.csv", "prompt,answer\n1+1=,2\n2+2=,\n3+3=,6\n", r"empty\.csv, line 3, column 'answer' is empty"),
    ("nan.csv", "prompt,answer\n1+1=,NaN\n", r"nan\.csv, line 2, column 'answer' is 'NaN', an empty cell"),
    ("ragged.csv", "prompt,answer\n1+1=,2,3\n", r"ragged\.csv, line 2: more cells than the header's 2 columns"),
    ("latin1.csv", b"prompt,answer\ncaf\xe9,1\n", r"latin1\.csv, line 2: not UTF-8 text"),
    ("null.jsonl", '{"prompt": "a", "answer": null}\n', r"null\.jsonl, line 1, column 'answer' is null"),
    ("nan.jsonl", '{"prompt": "a", "answer": NaN}\n', r"nan\.jsonl, line 1, column 'answer' is NaN, not a number"),
    ("list.jsonl", '{"prompt": "a", "answer": [1, 2]}\n', r"list\.jsonl, line 1, column 'answer' is a list"),
    ("broken.jsonl", '{"prompt": "a", "answer": "1"}\n{"prompt": "b", answer}\n', r"broken\.jsonl, line 2: not valid JSON"),
    ("short.jsonl", '{"prompt": "a", "answer": "1"}\n{"prompt": "b"}\n', r"short\.jsonl, line 2, column 'answer' is missing"),
])
def test_bad_data_stops_with_the_file_line_and_column(tmp_path, name, text, says):
    with pytest.raises(ValueError, match=says):
        _examples(tmp_path, name, text)


@pytest.mark.parametrize("setting, value, says", [
    ("alpha", float("nan"), "alpha must be a finite number above 0"), ("lr", float("inf"), "lr must be a finite number"),
    ("lr", 0.0, "lr must be a finite number above 0"), ("dropout", 1.0, r"dropout must be a number in \[0, 1\)"),
    ("warmup_steps", -1, "warmup_steps must be a whole number of at least 0"), ("batch_size", 0, "batch_size must be"),
])
def test_settings_are_checked_where_they_enter(setting, value, says):
    with pytest.raises(ValueError, match=says):
        FinetuneConfig(**{setting: value})
    from peftlab import LoraConfig, TrainConfig

    with pytest.raises(ValueError, match="LoRA alpha must be a finite number above 0"):
        LoraConfig(alpha=float("nan"))
    with pytest.raises(ValueError, match="lr must be a finite number above 0"):
        TrainConfig(lr=float("nan"))


def test_the_output_folder_is_never_overwritten_unless_it_is_an_earlier_run(tmp_path, capsys, monkeypatch):
    from peftlab.production.finetune import check_output_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("mine")
    assert "holds files that are not a peftlab finetune run" in _fail(capsys, "--data", "addition", "--output", str(project))
    assert (project / "README.md").read_text() == "mine" and sorted(p.name for p in project.iterdir()) == ["README.md"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert "is a file" in _fail(capsys, "--data", "addition", "--output", str(a_file))
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(ValueError, match="inside the model's folder"):
        check_output_folder(FinetuneConfig(model=str(model), output_dir=str(model / "adapter")))
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "finetune.json").write_text(json.dumps({"config": {}, "files": []}))
    assert "--overwrite" in _fail(capsys, "--data", "addition", "--output", str(earlier))
    assert check_output_folder(FinetuneConfig(output_dir=str(earlier), overwrite=True)) == earlier


def test_a_run_writes_beside_the_output_and_moves_in_only_when_finished(tmp_path):
    from transformers import TrainerCallback

    from peftlab.production.finetune import NonFiniteLoss, finetune, partial_folder

    output = tmp_path / "run"
    config = FinetuneConfig(data="sentiment", output_dir=str(output), steps=2, batch_size=2, progress=False)
    finetune(config)
    first = (output / "adapter_model.safetensors").read_bytes()
    assert (output / "finetune.json").exists() and not partial_folder(output).exists()

    class PoisonAfterOneStep(TrainerCallback):  # a run whose weights become NaN: it must stop and save nothing
        def on_step_end(self, args, state, control, model=None, **kwargs):
            with torch.no_grad():
                next(p for n, p in model.named_parameters() if "lora_A" in n).fill_(float("nan"))

    with pytest.raises(NonFiniteLoss, match=r"the loss became nan at step 2; nothing was saved"):
        finetune(FinetuneConfig(**{**config.__dict__, "overwrite": True, "seed": 1}), callbacks=[PoisonAfterOneStep()])
    assert (output / "adapter_model.safetensors").read_bytes() == first, "the earlier run is untouched"
    assert not partial_folder(output).exists(), "and nothing half-written is left beside it"
    finetune(FinetuneConfig(**{**config.__dict__, "overwrite": True, "seed": 1}))
    assert (output / "adapter_model.safetensors").read_bytes() != first, "--overwrite replaced it once finished"
    with pytest.raises(ValueError, match="unfinished peftlab finetune run"):
        partial_folder(output).mkdir()
        lora.load_lora(load_base()[0], partial_folder(output))


def test_examples_longer_than_max_length_lose_the_prompts_start_never_the_answer(tmp_path, capsys, monkeypatch):
    from peftlab.course.tasks import encode_example
    from peftlab.production.finetune import encode_examples, max_length_for

    base, tokenizer = load_base()
    course = load_task("reverse", limit=50)
    prompts, answers = [ex["prompt"] for ex in course], [ex["answer"] for ex in course]
    pairs, cut = encode_examples(tokenizer, prompts, answers, ["x"] * 50, 256)
    assert cut == 0 and pairs == [encode_example(tokenizer, ex) for ex in course], "short examples: exactly the course's"

    long_prompt = "1+1=" * 600
    (ids, labels), = encode_examples(tokenizer, [long_prompt], ["2"], ["x"], 32)[0]
    full, _ = encode_example(tokenizer, {"prompt": long_prompt, "answer": "2"})
    answer = [i for i in labels if i != -100]
    assert len(ids) == 32 and ids[0] == tokenizer.bos_token_id, "cut to 32 tokens, BOS kept"
    assert ids[1:] == full[-31:] and answer == full[-len(answer):], "the prompt lost its first tokens, the answer none"
    with pytest.raises(ValueError, match=r"rows\.jsonl, line 7: the answer is \d+ tokens .* no room for the prompt "
                                         r"within --max-length 8 \(and 1 more example\(s\)\)"):
        encode_examples(tokenizer, ["a", "b", "c"], ["9" * 20, "1", "9" * 20], ["rows.jsonl, line 7", "-", "-"], 8)
    assert max_length_for(FinetuneConfig(), base.config) == 256 == base.config.max_position_embeddings
    with pytest.raises(ValueError, match="longer than the model's context of 256 positions"):
        max_length_for(FinetuneConfig(max_length=257), base.config)
    with pytest.raises(ValueError, match="max_length must be a whole number of at least 2"):
        FinetuneConfig(max_length=0)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "1+1=", "answer": "2" * 300}) + "\n")
    error = _fail(capsys, "--data", str(rows), "--output", str(tmp_path / "out"))
    assert "rows.jsonl, line 1: the answer is" in error and "--max-length 256" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, text, columns, says", [
    ("few.csv", "prompt,answer\n1+1=,2\n2+2=\n", {}, r"few\.csv, line 3: fewer cells than the header's 2 columns"),
    ("same.csv", "prompt,answer\n1+1=,2\n", {"answer_column": "prompt"}, "both name 'prompt'"),
])
def test_rows_short_of_a_cell_and_one_column_named_twice_are_refused(tmp_path, name, text, columns, says):
    with pytest.raises(ValueError, match=says):
        _examples(tmp_path, name, text, **columns)


def test_a_model_folder_a_rank_and_output_paths_are_checked_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "folder.jsonl").mkdir()
    assert "is a folder; give one .jsonl or .csv file" in _fail(capsys, "--data", str(tmp_path / "folder.jsonl"),
                                                                "--output", str(tmp_path / "out"))
    (tmp_path / "notmodel").mkdir()
    (tmp_path / "notmodel" / "notes.txt").write_text("mine")
    assert "is not a model folder: it has no config.json" in _fail(
        capsys, "--data", "addition", "--model", str(tmp_path / "notmodel"), "--output", str(tmp_path / "out"))
    error = _fail(capsys, "--data", "addition", "--r", "200", "--output", str(tmp_path / "out"))
    assert "--r 200 is larger than model.layers.0.self_attn.q_proj allows (128 in, 128 out)" in error
    assert "not found in the base model" in _fail(capsys, "--data", "addition", "--targets", "qproj",
                                                  "--output", str(tmp_path / "out"))
    (tmp_path / "notes.txt").write_text("mine")
    assert "lies inside" in _fail(capsys, "--data", "addition", "--output", str(tmp_path / "notes.txt" / "run"))
    monkeypatch.chdir(tmp_path)
    assert "is the folder you are in" in _fail(capsys, "--data", "addition", "--output", ".")
    (tmp_path / "link").symlink_to(tmp_path / "notmodel")
    assert "is a link" in _fail(capsys, "--data", "addition", "--output", "link")
    assert not (tmp_path / "out").exists() and (tmp_path / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_only_what_the_earlier_run_wrote(tmp_path, capsys, monkeypatch):
    from peftlab.production.finetune import finetune

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    summary = finetune(FinetuneConfig(data="sentiment", output_dir=str(run), steps=1, batch_size=2, progress=False))
    assert set(summary["files"]) == {p.name for p in run.iterdir()}, "finetune.json lists every file the run wrote"
    (run / "my_notes.md").write_text("mine")
    error = _fail(capsys, "--data", "sentiment", "--output", str(run), "--overwrite")
    assert "files it did not write (my_notes.md)" in error and (run / "my_notes.md").read_text() == "mine"


def test_ctrl_c_ends_with_one_line_and_leaves_nothing(tmp_path):
    """Whenever the interrupt comes (while the libraries load, or while training), one line and exit status 130."""
    import signal
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen([str(PYTHON), "-m", "peftlab", "finetune", "--data", "addition", "--output", "run",
                                "--steps", "100000", "--no-progress"], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    time.sleep(12)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert len(lines) == 1 and "interrupted" in lines[0], lines
    assert list(tmp_path.iterdir()) == [], "no output folder and no partial one"


def test_a_gradient_that_becomes_nan_stops_the_run_though_the_loss_is_finite(tmp_path):
    from transformers import TrainerCallback

    from peftlab.production.finetune import NonFiniteLoss, finetune

    class NanGradient(TrainerCallback):  # the backward pass of one LoRA matrix gives NaN; the forward stays finite
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            next(p for n, p in model.named_parameters() if "lora_B" in n).register_hook(lambda g: g * float("nan"))

    output = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match="a gradient became NaN or infinite at step 1; nothing was saved"):
        finetune(FinetuneConfig(data="sentiment", output_dir=str(output), steps=2, batch_size=2, progress=False),
                 callbacks=[NanGradient()])
    assert list(tmp_path.iterdir()) == []


def test_command_line_mistakes_take_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["finetune", "--data", "addition", "--output", "x", "--steps", "1.5"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --steps: invalid int value: '1.5'" in err and "--help" in err


def test_the_recipe_follows_the_course_device_policy(monkeypatch):
    """PEFTLAB_DEVICE=cpu keeps the recipe on the CPU of a GPU machine, as it keeps the chapters (it once asked
    torch.cuda.is_available() itself)."""
    from peftlab.production import finetune

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("PEFTLAB_DEVICE", "cpu")
    assert not finetune.on_gpu() and finetune._dtype(FinetuneConfig()) == torch.float32
    monkeypatch.delenv("PEFTLAB_DEVICE")
    assert finetune.on_gpu()


def test_a_target_pattern_from_python_selects_layers_or_fails_in_one_line():
    """FinetuneConfig is a LoraConfig, so a Python caller may pass peft's regular-expression form of the targets."""
    import re

    from peftlab.production.finetune import load_model

    model, _ = load_model(FinetuneConfig(target_modules=re.compile(r".*layers\.0\..*q_proj")))
    assert [n for n, _ in model.named_modules() if n.endswith("lora_A")] == \
        ["base_model.model.model.layers.0.self_attn.q_proj.lora_A"]
    with pytest.raises(ValueError, match=r"^--targets \.\*nomatch\.\*: "):
        load_model(FinetuneConfig(target_modules=re.compile(r".*nomatch.*")))
