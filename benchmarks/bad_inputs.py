"""Run bad and edge-case inputs (a user's data, settings, folders, interruptions) against a checkout,
as a new user would, and store what each one did.

    python benchmarks/bad_inputs.py data/results/bad_inputs.json [--checkout PATH] [--only NAME ...]

Each case runs in a fresh temporary folder, in a process of its own (``python -m peftlab ...`` or a few lines of the
Python API), offline, against the peftlab of ``--checkout`` (default: this one; give an older commit's worktree to see
what it did). What came out is sorted into one of:

- ``clear line``: it stopped with one line (an exit status of 2, or a ValueError/FileNotFoundError from the API) that
  contains the words the case expects, e.g. the file and line;
- ``vague line``: it stopped with one line that lacks them;
- ``traceback``: a Python traceback reached the user, or an error of a library's own (ZeroDivisionError, a hub error);
- ``correct``: it ran, and the case's check of the result passed (the data as written, the user's files unchanged);
- ``silently wrong``: it ran without a word and the check failed (the detail says what went wrong);
- ``hang``: still running after the case's time limit.

The tests (tests/test_finetune.py, tests/test_memory.py, tests/test_base_and_tasks.py) assert the same behaviour;
this script keeps the before/after table (data/results/bad_inputs_before.json, bad_inputs.json) repeatable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from book_times import ROOT, machine  # noqa: E402

TRAIN = ["--steps", "2", "--batch-size", "2", "--no-progress"]
SUMS = "".join(json.dumps({"prompt": f"{a}+{a}=", "answer": str(2 * a)}) + "\n" for a in range(8))
QWEN3_0_6B = {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
              "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True}

STATE = "# the state of the folder"  # checks that judge a refusal too: nothing may have changed

# A check runs after a case that did not stop, in the case's folder, and prints "ok: ..." or "wrong: ...".
ANSWERS_AS_READ = """
from peftlab.production.finetune import FinetuneConfig, load_examples
answers = list(load_examples(FinetuneConfig(data={data!r}))["answer"])
print(("ok: " if answers == {want!r} else "wrong: ") + "the answers train as " + repr(answers))
"""
ADAPTER_FINITE = """
import json, math
from pathlib import Path
from safetensors.torch import load_file
out = Path("run")
finite = all(bool(t.isfinite().all()) for t in load_file(out / "adapter_model.safetensors").values())
loss = json.loads((out / "finetune.json").read_text())["train_loss"]
print(("ok: " if finite and math.isfinite(loss) else "wrong: ") + f"saved weights finite: {finite}, mean loss {loss}")
"""
UNCHANGED = """# the state of the folder
import hashlib, json
from pathlib import Path
before = json.loads(Path("before.json").read_text())
now = {{str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path({folder!r}).rglob("*"))
       if p.is_file() and p.name != "before.json"}}
before = {{k: v for k, v in before.items() if {folder!r} == "." or k.startswith({folder!r} + "/")}}
changed = sorted(p for p in set(before) | set(now) if before.get(p) != now.get(p))
print(("ok: " if not changed else "wrong: ") + f"{{len(changed)}} file(s) of {{len(before)}} changed or added: " + ", ".join(changed[:4]))
"""
LENGTH_HANDLED = """
import json
from pathlib import Path
summary = json.loads(Path("run/finetune.json").read_text())
if summary.get("max_length", 10**9) <= 256 and summary.get("prompts_cut") == 1:
    print("ok: the prompt was cut to the model's 256 positions, and counted")
else:
    print("wrong: trained on more positions than the model's 256, with only the tokenizer's warning")
"""
RUN_STATE = """# the state of the folder
from pathlib import Path
folders = sorted(p.name for p in Path(".").iterdir() if p.is_dir())
print(("ok: " if "run" not in folders and not any("partial" in f for f in folders) else "wrong: ") + f"folders left: {folders}")
"""
API_ERRORS = ("import sys\ntry:\n{body}\nexcept (ValueError, FileNotFoundError) as e:\n"
              "    print(f'ERROR {{type(e).__name__}}: {{e}}', file=sys.stderr); sys.exit(2)\n")


def api(body: str) -> list[str]:
    """A few lines of the Python API; an error a user should see (ValueError, FileNotFoundError) exits 2 with its line."""
    return [sys.executable, "-c", API_ERRORS.format(body="\n".join("    " + line for line in body.strip().splitlines()))]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "peftlab", *args]


def case(name, what, command, files=None, says=(), check=None, before=None, interrupt_after=None, limit=240):
    """``says``: words a clear refusal contains (none: the case should run, and ``check`` judges the result)."""
    return dict(name=name, what=what, command=command, files=files or {}, says=list(says), check=check, before=before,
                interrupt_after=interrupt_after, limit=limit)


CASES = [
    # data changed without a word
    case("csv-empty-cell", "a CSV answer column with one empty cell",
         cli("finetune", "--data", "sums.csv", "--output", "run", *TRAIN),
         {"sums.csv": "prompt,answer\n1+1=,2\n2+2=,\n3+3=,6\n"}, says=["sums.csv, line 3", "'answer'", "empty"],
         check=ANSWERS_AS_READ.format(data="sums.csv", want=["2", "", "6"])),
    case("csv-nan-cell", "a CSV answer cell NaN",
         cli("finetune", "--data", "sums.csv", "--output", "run", *TRAIN),
         {"sums.csv": "prompt,answer\n1+1=,2\n2+2=,NaN\n"}, says=["sums.csv, line 3", "'NaN'"],
         check=ANSWERS_AS_READ.format(data="sums.csv", want=["2", "NaN"])),
    case("csv-leading-zeros", "an all-digit CSV column with leading zeros (007)",
         cli("finetune", "--data", "codes.csv", "--output", "run", *TRAIN), {"codes.csv": "prompt,answer\nagent,007\nbond,042\n"},
         check=ANSWERS_AS_READ.format(data="codes.csv", want=["007", "042"])),
    case("jsonl-list-answer", "a JSONL answer that is a list",
         cli("finetune", "--data", "lists.jsonl", "--output", "run", *TRAIN),
         {"lists.jsonl": '{"prompt": "a", "answer": [1, 2]}\n{"prompt": "b", "answer": "3"}\n'},
         says=["lists.jsonl, line 1", "a list"], check=ANSWERS_AS_READ.format(data="lists.jsonl", want=["[1, 2]", "3"])),
    case("jsonl-number-answer", "a JSONL answer written as a number (1.50)",
         cli("finetune", "--data", "n.jsonl", "--output", "run", *TRAIN),
         {"n.jsonl": '{"prompt": "a", "answer": 1.50}\n{"prompt": "b", "answer": "3"}\n'},
         check=ANSWERS_AS_READ.format(data="n.jsonl", want=["1.50", "3"])),
    # settings
    case("alpha-nan", "--alpha nan", cli("finetune", "--data", "addition", "--output", "run", "--alpha", "nan", *TRAIN),
         says=["alpha", "finite"], check=ADAPTER_FINITE),
    case("lr-inf", "--lr inf", cli("finetune", "--data", "addition", "--output", "run", "--lr", "inf", *TRAIN),
         says=["lr", "finite"], check=ADAPTER_FINITE),
    case("loraconfig-alpha-nan", "LoraConfig(alpha=nan)",
         api("from peftlab import LoraConfig\nLoraConfig(alpha=float('nan'))\nprint('accepted')"), says=["alpha", "finite"],
         check="print('wrong: LoraConfig(alpha=nan) accepted')"),
    case("steps-zero", "--steps 0", cli("finetune", "--data", "addition", "--output", "run", "--steps", "0", "--no-progress"),
         says=["steps", "got 0"], check=RUN_STATE),
    # the output folder
    case("earlier-run", "a second run into the folder of a finished one",
         cli("finetune", "--data", "addition", "--output", "run", "--seed", "1", *TRAIN), says=["earlier", "--overwrite"],
         before=cli("finetune", "--data", "addition", "--output", "run", *TRAIN), check=UNCHANGED.format(folder="run")),
    case("output-dot", "--output . in a project folder with a README.md",
         cli("finetune", "--data", "addition", "--output", ".", *TRAIN), {"README.md": "# my project\n", "notes.txt": "mine\n"},
         says=["--output ."], check=UNCHANGED.format(folder=".")),
    case("output-is-model", "--model X --output X",
         cli("finetune", "--data", "addition", "--model", "X", "--output", "X", *TRAIN), {"X": ROOT / "data" / "base"},
         says=["model's folder"], check=UNCHANGED.format(folder="X")),
    case("output-is-file", "--output naming a file", cli("finetune", "--data", "addition", "--output", "notes.txt", *TRAIN),
         {"notes.txt": "mine\n"}, says=["notes.txt is a file"], check=UNCHANGED.format(folder=".")),
    case("failed-run-folder", "a run that fails (--model is no model) into a new folder",
         cli("finetune", "--data", "addition", "--model", "nomodel", "--output", "run", *TRAIN),
         {"nomodel/notes.txt": "mine\n"}, says=["nomodel"], check=RUN_STATE),
    case("interrupt-during-save", "an interrupt while the adapter of a second run is being saved",
         api("""
import transformers
from peftlab.production.finetune import FinetuneConfig, finetune
fields = FinetuneConfig.__dataclass_fields__
def interrupted_save(self, output_dir=None, **kw):
    from pathlib import Path
    Path(output_dir, "adapter_model.safetensors").write_bytes(b"half")
    raise KeyboardInterrupt
transformers.Trainer.save_model = interrupted_save
try:
    finetune(FinetuneConfig(data="addition", output_dir="run", steps=2, batch_size=2, progress=False, seed=1,
                            **({"overwrite": True} if "overwrite" in fields else {})))
except KeyboardInterrupt:
    pass
"""), before=cli("finetune", "--data", "addition", "--output", "run", *TRAIN),
         check=UNCHANGED.format(folder="run")),
    case("ctrl-c", "Ctrl-C while training", cli("finetune", "--data", "addition", "--output", "run", "--steps", "100000",
                                                "--no-progress"),
         says=["interrupted"], interrupt_after=20, check=RUN_STATE),
    # lengths
    case("one-megabyte-line", "a 1 MB one-line example",
         cli("finetune", "--data", "big.jsonl", "--output", "run", *TRAIN),
         {"big.jsonl": json.dumps({"prompt": "12+" * 350_000, "answer": "2"}) + "\n" + SUMS}, check=LENGTH_HANDLED, limit=120),
    case("long-prompt", "a 1,127-token prompt (the model has 256 positions)",
         cli("finetune", "--data", "long.jsonl", "--output", "run", *TRAIN),
         {"long.jsonl": json.dumps({"prompt": "1+" * 563, "answer": "2"}) + "\n" + SUMS}, check=LENGTH_HANDLED),
    case("answer-too-long", "an answer longer than the model's context",
         cli("finetune", "--data", "long.jsonl", "--output", "run", *TRAIN),
         {"long.jsonl": SUMS + json.dumps({"prompt": "a", "answer": "9" * 300}) + "\n"},
         says=["long.jsonl, line 9", "answer"], check="print('wrong: trained on an answer the model cannot hold')"),
    # errors for humans
    case("malformed-jsonl", "a malformed JSONL line", cli("finetune", "--data", "bad.jsonl", "--output", "run", *TRAIN),
         {"bad.jsonl": SUMS + '{"prompt": "b", answer}\n'}, says=["bad.jsonl, line 9"], check=RUN_STATE),
    case("not-utf8", "a CSV that is not UTF-8", cli("finetune", "--data", "l1.csv", "--output", "run", *TRAIN),
         {"l1.csv": b"prompt,answer\ncaf\xe9,1\n"}, says=["l1.csv, line 2", "UTF-8"], check=RUN_STATE),
    case("load-base-missing", "load_base('/nonexistent')", api("from peftlab import load_base\nload_base('/nonexistent')"),
         says=["/nonexistent", "no such folder"], check="print('wrong: returned a model')"),
    case("load-base-not-a-model", "load_base of a folder that is not a model",
         api("from peftlab import load_base\nload_base('notes')"), {"notes/a.txt": "mine\n"}, says=["notes", "not a model folder"]),
    case("evaluate-empty", "evaluate([])",
         api("from peftlab import load_base\nfrom peftlab.course.train import evaluate\n"
             "m, t = load_base()\nprint(evaluate(m, t, []))"), says=["no examples"]),
    case("evaluate-batch-zero", "evaluate(batch_size=0)",
         api("from peftlab import load_base, load_task\nfrom peftlab.course.train import evaluate\n"
             "m, t = load_base()\nprint(evaluate(m, t, load_task('addition', 'validation', limit=4), batch_size=0))"),
         says=["batch_size"]),
    case("train-batch-zero", "TrainConfig(batch_size=0)", api("from peftlab.course.train import TrainConfig\nTrainConfig(batch_size=0)"),
         says=["batch_size"], check="print('wrong: TrainConfig(batch_size=0) accepted; train fails later in max()')"),
    case("truncated-safetensors", "load_lora of a truncated adapter_model.safetensors",
         api("""
from pathlib import Path
from peftlab import load_base
from peftlab.methods import lora
m, t = load_base(); lora.add_lora(m); lora.save_lora(m, "adapter")
f = Path("adapter/adapter_model.safetensors"); f.write_bytes(f.read_bytes()[:1000])
lora.load_lora(load_base()[0], "adapter")"""), says=["adapter_model.safetensors"]),
    case("malformed-adapter-config", "load_lora of a malformed adapter_config.json",
         api("""
from pathlib import Path
from peftlab import load_base
from peftlab.methods import lora
m, t = load_base(); lora.add_lora(m); lora.save_lora(m, "adapter")
f = Path("adapter/adapter_config.json"); f.write_text(f.read_text()[:-20])
lora.load_lora(load_base()[0], "adapter")"""), says=["adapter_config.json"]),
    # more of the same kinds, beyond the list
    case("data-is-a-folder", "--data naming a folder", cli("finetune", "--data", "rows.jsonl", "--output", "run", *TRAIN),
         {"rows.jsonl/a.txt": "mine\n"}, says=["rows.jsonl is a folder"], check=RUN_STATE),
    case("csv-short-row", "a CSV row with fewer cells than the header",
         cli("finetune", "--data", "sums.csv", "--output", "run", *TRAIN), {"sums.csv": "prompt,answer\n1+1=,2\n2+2=\n"},
         says=["sums.csv, line 3", "fewer cells"], check=ANSWERS_AS_READ.format(data="sums.csv", want=["2", ""])),
    case("same-column-twice", "--answer-column naming the prompt column",
         cli("finetune", "--data", "addition", "--answer-column", "prompt", "--output", "run", *TRAIN),
         says=["'prompt'"], check="print('wrong: trained the prompt as its own answer')"),
    case("recipe-rank-too-large", "peftlab finetune --r 200 on a 128-wide model",
         cli("finetune", "--data", "addition", "--r", "200", "--output", "run", *TRAIN), says=["--r 200", "128"],
         check="print('wrong: trained a rank no layer can use')"),
    case("misspelt-target", "--targets qproj", cli("finetune", "--data", "addition", "--targets", "qproj", "--output", "run",
                                                  *TRAIN), says=["qproj"], check=RUN_STATE),
    case("overwrite-with-user-file", "--overwrite on an earlier run the user added a file to",
         cli("finetune", "--data", "addition", "--output", "run", "--overwrite", *TRAIN), {"run/my_notes.md": "mine\n"},
         says=["my_notes.md"], before=["sh", "-c", "mv run/my_notes.md . && " + " ".join(
             cli("finetune", "--data", "addition", "--output", "run", *TRAIN)) + " && mv my_notes.md run/"],
         check=UNCHANGED.format(folder="run")),
    case("output-inside-a-file", "--output notes.txt/run", cli("finetune", "--data", "addition", "--output", "notes.txt/run",
                                                              *TRAIN), {"notes.txt": "mine\n"}, says=["notes.txt"],
         check=UNCHANGED.format(folder=".")),
    case("memory-not-json", "peftlab memory --config of a file that is not JSON", cli("memory", "--config", "notes.txt"),
         {"notes.txt": "mine\n"}, says=["notes.txt", "not a JSON file"]),
    case("memory-gpu-nan", "peftlab memory --gpu nan", cli("memory", "--model", "Llama-2-7B", "--gpu", "nan"),
         says=["--gpu"], check="print('wrong: answered whether it fits a GPU of nan GB')"),
    case("load-task-negative-limit", "load_task('addition', limit=-1)",
         api("from peftlab import load_task\nprint(len(load_task('addition', limit=-1)))"), says=["limit", "-1"],
         check="import sys\nprint(f'wrong: returned {sys.argv[1]} examples, all but the last')"),
    case("train-on-strings", "train on a list of strings instead of examples",
         api("from peftlab import load_base\nfrom peftlab.course.train import train, TrainConfig\n"
             "m, t = load_base()\ntrain(m, t, ['1+1=2'], TrainConfig(steps=1, progress=False))"), says=["example 0", "'prompt'"]),
    case("load-base-hub-offline", "load_base('someone/nothing') with the hub switched off",
         api("from peftlab import load_base\nload_base('someone/nothing')"), says=["someone/nothing", "HF_HUB_OFFLINE"]),
    case("output-is-cwd", "--output . in an empty folder", cli("finetune", "--data", "addition", "--output", ".", *TRAIN),
         says=["--output ."], check=UNCHANGED.format(folder=".")),
    # the memory calculator
    case("memory-rank-too-large", "peftlab memory --r 100000 on a 4096-wide model",
         cli("memory", "--layers", "32", "--hidden", "4096", "--intermediate", "11008", "--heads", "32", "--vocab", "32000",
             "--r", "100000"), says=["100000"], check="print('wrong: a rank above the layer width was estimated')"),
    case("memory-head-dim", "peftlab memory --config of Qwen3-0.6B (head_dim 128)",
         cli("memory", "--config", "config.json"), {"config.json": json.dumps(QWEN3_0_6B)},
         check="import sys\nprint('ok: 0.60B parameters' if sys.argv[1].startswith('0.60B') else 'wrong: ' + sys.argv[1][:40])"),
]


def _write(folder: Path, files: dict) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            subprocess.run(["cp", "-r", str(content), str(path)], check=True)
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "before.json"}


def _lines(stderr: str) -> list[str]:
    """What the user reads: stderr without the warnings libraries print on import and progress bars."""
    return [line for line in stderr.splitlines() if line.strip() and "Warning" not in line and "warnings.warn" not in line
            and not line.startswith(("  warnings.", "  return ", "\r"))]


def _check(spec: dict, folder: Path, env: dict, stdout: str) -> str:
    judged = subprocess.run([sys.executable, "-c", spec["check"], stdout.strip()], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=300)
    return (judged.stdout.strip().splitlines() or ["wrong: the check itself failed: " + judged.stderr[-200:]])[-1]


def run_case(spec: dict, checkout: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(checkout),
           "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write(folder, spec["files"])
        if spec["before"]:
            subprocess.run(spec["before"], cwd=folder, env=env, capture_output=True, timeout=300, check=True)
        (folder / "before.json").write_text(json.dumps(_snapshot(folder)))  # the user's files, for UNCHANGED
        started = time.time()
        process = subprocess.Popen(spec["command"], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True,  # its own group, as a terminal's job
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background
        # job inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: give it a terminal's default
        try:
            if spec["interrupt_after"]:
                time.sleep(spec["interrupt_after"])
                os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
            out, err = process.communicate(timeout=spec["limit"])
            hung = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            hung = True
        lines = _lines(err)
        record = {"name": spec["name"], "what": spec["what"], "returncode": process.returncode,
                  "seconds": round(time.time() - started, 1), "stderr_lines": len(lines),
                  "last_line": (lines[-1] if lines else "")[:300]}
        verdict = _check(spec, folder, env, out) if spec["check"] and not hung else None
        stopped = process.returncode != 0 or spec["interrupt_after"]
        if hung:
            outcome, detail = "hang", f"still running after {spec['limit']} s"
        elif "Traceback (most recent call last)" in err:
            outcome, detail = "traceback", f"{err.count(chr(10) + '  File ')} frames, ending {record['last_line'][:150]}"
        elif stopped:
            clear = spec["says"] and len(lines) == 1 and all(word in lines[0] for word in spec["says"])
            outcome, detail = ("clear line" if clear else "vague line"), record["last_line"][:200]
        else:
            ok = not spec["says"] and verdict is not None and verdict.startswith("ok:")
            outcome, detail = ("correct" if ok else "silently wrong"), (verdict or "ran").split(": ", 1)[-1]
        if stopped and not hung and spec["check"] and STATE in spec["check"] and not verdict.startswith("ok:"):
            outcome += " + left the user's files changed"  # a refusal or an error must not have touched anything
            detail += "; " + verdict
        record.update(outcome=outcome, detail=detail, check=verdict)
        return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the peftlab to try (a git worktree of another commit)")
    parser.add_argument("--only", nargs="*", help="run only these cases")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.checkout, capture_output=True,
                            text=True).stdout.strip()
    records = []
    for spec in CASES:
        if args.only and spec["name"] not in args.only:
            continue
        record = run_case(spec, args.checkout.resolve())
        records.append(record)
        print(f"{record['name']:28s} {record['outcome']:16s} {record['detail'][:110]}", flush=True)
    counts = {}
    for record in records:
        counts[record["outcome"]] = counts.get(record["outcome"], 0) + 1
    print("; ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    args.out.write_text(json.dumps({"command": " ".join(["python", "benchmarks/bad_inputs.py", *sys.argv[1:]]),
                                    "commit": commit, "machine": machine(), "counts": counts, "cases": records},
                                   indent=1) + "\n")


if __name__ == "__main__":
    main()
