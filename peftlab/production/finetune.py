"""The production training recipe: transformers' ``Trainer`` + peft, data through 🤗 ``datasets``.

The course trains with its own short loop (``peftlab.course.train``), written to be read. This is
what a learner runs next, on their own model and data. The same code runs

- on the CPU or one GPU:                ``peftlab finetune --data addition --output runs/addition``
- on several GPUs or processes (data parallel; every process holds the model and takes its own
  share of each global batch, gradients are averaged):
                                        ``accelerate launch --multi_gpu --num_processes 2 -m peftlab finetune ...``

(``--multi_gpu`` is accelerate's name for "launch N processes with torchrun"; on a machine without
a GPU the processes run on the CPU and talk over gloo, which is how CI checks this recipe.)

A global batch is ``batch_size x gradient_accumulation_steps x processes`` examples. The loss is
averaged over the answer tokens of the whole global batch (``average_tokens_across_devices``),
so two processes with batch 4 train exactly as one process with batch 8 (tests/test_finetune.py).

Data: a course task by name (``addition``, ``sentiment``, ``reverse``) or a JSONL/CSV file with a
prompt column and an answer column, read as written (every cell is text; a bad cell or line stops the
run, naming the file, line and column). The model learns to write the answer after the prompt, as in
the course: the loss counts only the answer tokens and the end-of-text after them. ``max_length``
bounds an example: a long prompt loses its first tokens, an answer is never cut.

A user's folders are theirs: a run writes beside ``output_dir`` and moves in only once finished, never
into a folder that holds anything but an earlier run (and that only with ``overwrite``).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from peftlab.core import checks
from peftlab.core.inject import ALL_LINEAR
from peftlab.course.data import data_path
from peftlab.course.model import bundled_model, course_device, load_causal_lm, model_source
from peftlab.course.tasks import TASK_NAMES
from peftlab.course.train import TrainConfig, pad_batch
from peftlab.methods.lora import LoraConfig, peft_target_modules
from peftlab.methods.names import LORA, QLORA

# the command line's spelling of each method the recipe trains -> the course's name for it (peftlab.methods.names)
METHODS = {"lora": LORA, "qlora": QLORA}
DATA_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv"}


@dataclass
class FinetuneConfig(LoraConfig, TrainConfig):
    """The recipe's settings: the course's ``LoraConfig`` and ``TrainConfig`` (their fields, defaults and checks are
    written once, there: ``r``, ``alpha``, ``dropout``, ``target_modules``, ``use_rslora``; ``steps``, ``lr``,
    ``weight_decay``, ``warmup_steps``, ``seed``, ``progress``), two of their defaults changed for the recipe, and
    what a run on one's own model and data adds. ``peftlab finetune``'s options are made from these fields
    (``peftlab.cli``), with the help in ``HELP``."""

    data: str = "addition"                # a course task's name, or a .jsonl / .csv file
    output_dir: str = "finetuned"         # the adapter (peft's format), the tokenizer and finetune.json
    model: str | None = None              # None: the course's bundled base model; else a hub id or a local folder
    method: str = "lora"                  # "lora", or "qlora": the frozen weights in NF4 through bitsandbytes
    prompt_column: str = "prompt"
    answer_column: str = "answer"
    target_modules: tuple[str, ...] = ALL_LINEAR  # the QLoRA paper's advice, every linear layer (the course: q, v)
    batch_size: int = 8                   # per process and per accumulation step (the course's loop: 32 in one)
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, about 1/3 more time
    dtype: str = "auto"                   # "auto": bfloat16 on a GPU that has it, else float32
    max_length: int | None = None         # tokens of prompt + answer + end-of-text; None: the model's context. A longer
                                          # prompt loses its first tokens (counted); an answer that does not fit stops the run
    extra: dict = field(default_factory=dict)  # more transformers.TrainingArguments, by name
    overwrite: bool = False               # replace output_dir when it holds an earlier peftlab finetune run (only then)

    def __post_init__(self):
        LoraConfig.__post_init__(self)
        TrainConfig.__post_init__(self)
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; the recipe trains one of {tuple(METHODS)}")
        if not self.target_modules:
            raise ValueError("target_modules is empty: name the layers LoRA adapts (default: every linear layer)")
        checks.whole_number("gradient_accumulation_steps", self.gradient_accumulation_steps)
        if self.max_length is not None:
            checks.whole_number("max_length", self.max_length, minimum=2)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be {', '.join(DTYPES[:-1])} or {DTYPES[-1]}, got {self.dtype!r}")


DTYPES = ("auto", "float32", "bfloat16", "float16")

# What ``peftlab finetune --help`` says of each setting (the command line is made from the fields above).
HELP = {
    "data": "a course task (addition, sentiment, reverse) or a .jsonl / .csv file of prompts and answers",
    "output_dir": "folder for the adapter (peft's format) and finetune.json",
    "model": "a local model folder or a hub id (default: the course's bundled model)",
    "method": "lora, or qlora: the frozen weights in 4-bit NF4 through bitsandbytes",
    "prompt_column": "the column of the data that holds the prompts",
    "answer_column": "the column of the data that holds the answers",
    "r": "LoRA rank",
    "alpha": "LoRA alpha (the update is scaled by alpha/r)",
    "dropout": "dropout on LoRA's input",
    "target_modules": "LoRA target modules (names matched at the end of a module's path)",
    "use_rslora": "rank-stabilised LoRA: scale the update by alpha/sqrt(r)",
    "steps": "optimizer steps",
    "lr": "learning rate (right for this small model's LoRA; a 7B model wants about 1e-4 to 2e-4)",
    "batch_size": "examples per process and step",
    "weight_decay": "AdamW's weight decay",
    "gradient_accumulation_steps": "gradient accumulation steps",
    "warmup_steps": "steps of linear warmup before the constant rate",
    "seed": "seed of the LoRA initialisation and the data order",
    "gradient_checkpointing": "recompute activations in the backward pass: less memory, about 1/3 more time",
    "dtype": "the weights' dtype (auto: bfloat16 on a GPU that has it, else float32)",
    "max_length": "most tokens of prompt + answer + end-of-text (default: the model's context). A longer prompt loses "
                  "its first tokens and is counted; an answer is never cut: an example whose answer does not fit stops "
                  "the run, naming its line",
    "progress": "a progress bar",
    "overwrite": "replace --output when it holds an earlier peftlab finetune run (only then, and only once the new run "
                 "has finished); a folder with other files is never written to",
}


# ----------------------------------------------------------------------------------------------------------------
# data


def data_file(data: str) -> Path:
    """The file behind ``--data``: a course task's training split, or the user's own file."""
    if data in TASK_NAMES:
        return data_path("tasks", data, "train.jsonl")
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"--data {data!r} is neither a course task ({', '.join(TASK_NAMES)}) nor an existing file")
    if path.is_dir():
        raise ValueError(f"--data {data} is a folder; give one .jsonl or .csv file of examples")
    if path.suffix.lower() not in DATA_FORMATS:
        raise ValueError(f"{path}: unknown format {path.suffix!r}; give a .jsonl (one JSON object a line) or .csv file")
    return path


MISSING_MARKERS = ("nan", "null")  # what spreadsheets and pandas write into a CSV for an empty cell (lower-cased)


def _text_file(path: Path) -> list[str]:
    """The file's lines, decoded as UTF-8; a byte that is not UTF-8 stops here, naming its line."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path} cannot be read ({error.strerror})") from None
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text (byte {raw[error.start]:#04x}); save the file as UTF-8") from None


def _rows_of_csv(path: Path) -> tuple[list[str], list[tuple[int, dict]], str]:
    """(columns, [(line, row)], "line"): every cell exactly as written, as text (no type guessing: '007' stays '007')."""
    reader = csv.DictReader(_text_file(path))
    rows = []
    limit = csv.field_size_limit(sys.maxsize)  # a long cell is the length check's to judge, not the csv module's
    try:
        for row in reader:
            if None in row:
                raise ValueError(f"{path}, line {reader.line_num}: more cells than the header's "
                                 f"{len(reader.fieldnames)} columns (a comma inside a cell needs quotes)")
            if None in row.values():
                raise ValueError(f"{path}, line {reader.line_num}: fewer cells than the header's "
                                 f"{len(reader.fieldnames)} columns ({', '.join(reader.fieldnames)})")
            rows.append((reader.line_num, row))
    except csv.Error as error:
        raise ValueError(f"{path}, line {reader.line_num}: {error}") from None
    finally:
        csv.field_size_limit(limit)
    return list(reader.fieldnames or []), rows, "line"


class NotText(str):
    """JSON's NaN, Infinity and -Infinity (Python's json module reads them): a number that is not one, never an answer."""


def _json_text(value, where: str) -> str:
    if isinstance(value, str) and not isinstance(value, NotText):  # numbers arrive as their own text: 1.50 stays '1.50'
        return value
    kind = {type(None): "null", bool: "true/false", list: "a list", dict: "an object",
            NotText: f"{value}, not a number"}.get(type(value), type(value).__name__)
    raise ValueError(f"{where} is {kind}; every prompt and answer must be text (a JSON string)")


def _rows_of_json(path: Path) -> tuple[list[str], list[tuple[int, dict]], str]:
    """(columns, [(number, row)], "line" or "item") of a JSON Lines file (one object a line), or of a .json file holding one list."""
    lines = _text_file(path)
    parse = functools.partial(json.loads, parse_int=str, parse_float=str, parse_constant=NotText)
    text = "\n".join(lines).lstrip()
    if text.startswith("["):  # a JSON array of objects
        try:
            items = parse(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None
        numbered = [(i + 1, item) for i, item in enumerate(items)]  # without line numbers: the item's position
        unit = "item"
    else:
        numbered, unit = [], "line"
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                numbered.append((number, parse(line)))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno}); "
                                 "a JSON Lines file holds one object a line") from None
    columns, rows = [], []
    for number, item in numbered:
        if not isinstance(item, dict):
            raise ValueError(f"{path}, {unit} {number}: an example is a JSON object with a prompt and an answer, "
                             f"not {type(item).__name__}")
        columns += [c for c in item if c not in columns]
        rows.append((number, item))
    return columns, rows, unit


def load_examples(config: FinetuneConfig):
    """The training data as a ``datasets.Dataset`` of ``prompt`` and ``answer`` strings, read as written.

    Every cell is text exactly as the file has it (a CSV's ``007`` stays ``007``, a JSON ``1.50`` stays ``1.50``).
    A missing column, an empty cell (or a spreadsheet's ``NaN`` / ``null``), a value that is not text, a malformed
    line or a file that is not UTF-8 stops the run before anything is written, with one line naming the file, the
    line and the column."""
    import datasets

    prompts, answers, _ = read_examples(config)
    return datasets.Dataset.from_dict({"prompt": prompts, "answer": answers})


def read_examples(config: FinetuneConfig) -> tuple[list[str], list[str], list[str]]:
    """``(prompts, answers, where)``: ``load_examples``' data, and where in the file each example is ("x.csv, line 3")."""
    if config.prompt_column == config.answer_column:
        raise ValueError(f"--prompt-column and --answer-column both name {config.prompt_column!r}; the prompt and the "
                         "answer are two columns")
    path = data_file(config.data)
    columns, rows, unit = (_rows_of_csv if path.suffix.lower() == ".csv" else _rows_of_json)(path)
    if not rows:
        what = "is empty" if not path.read_bytes().strip() else "has no examples, only a header"
        raise ValueError(f"{path} {what}: it needs one example a line, each with {config.prompt_column!r} and "
                         f"{config.answer_column!r}")
    missing = [c for c in (config.prompt_column, config.answer_column) if c not in columns]
    if missing:
        raise ValueError(f"{path} has no column {' or '.join(map(repr, missing))}; its columns are {columns}. "
                         "Name yours with --prompt-column and --answer-column")
    prompts, answers, where_from = [], [], []
    for number, row in rows:
        where_from.append(f"{path}, {unit} {number}")
        for column, into in ((config.prompt_column, prompts), (config.answer_column, answers)):
            where = f"{path}, {unit} {number}, column {column!r}"
            if column not in row:
                raise ValueError(f"{where} is missing; every example needs a prompt and an answer")
            value = _json_text(row[column], where)
            if not value.strip() or (path.suffix.lower() == ".csv" and value.strip().lower() in MISSING_MARKERS):
                raise ValueError(f"{where} is {'empty' if not value.strip() else repr(value) + ', an empty cell'}; "
                                 "every example needs a prompt and an answer (remove the example or fill it in)")
            into.append(value)
    return prompts, answers, where_from


# ----------------------------------------------------------------------------------------------------------------
# lengths: what the model can take


def model_context(model_config) -> int | None:
    """The most positions the model was built for (``max_position_embeddings``, GPT-2's ``n_positions``), if it says."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def max_length_for(config: FinetuneConfig, model_config) -> int:
    """``--max-length``, or the model's context; longer than the context is refused (positions past it were never trained,
    and GPT-2-style learned positions have no embedding there)."""
    context = model_context(model_config)
    if config.max_length is None:
        if context is None:
            raise ValueError("the model's config names no context length (max_position_embeddings); give --max-length")
        return context
    if context is not None and config.max_length > context:
        raise ValueError(f"--max-length {config.max_length} is longer than the model's context of {context} positions; "
                         f"give at most {context}")
    return config.max_length


def encode_examples(tokenizer, prompts: list[str], answers: list[str], where: list[str], max_length: int):
    """``(pairs, cut)``: each example's ``(input_ids, labels)`` as ``encode_example`` makes them, at most ``max_length``
    long, and how many prompts were cut to fit.

    A prompt too long loses its first tokens (the special tokens the tokenizer puts first, such as BOS, stay): what
    comes just before the answer is what the model needs most. An answer is never cut, since the model would learn to
    stop early; an example whose answer (with end-of-text) leaves no room for a prompt stops the run, naming it."""
    starts = tokenizer("", verbose=False)["input_ids"]  # what the tokenizer puts before any text (BOS, or nothing)
    prompt_ids = tokenizer(prompts, verbose=False)["input_ids"]  # the same calls as encode_example, batched
    answer_ids = tokenizer(answers, add_special_tokens=False, verbose=False)["input_ids"]
    pairs, cut, too_long = [], 0, []
    for prompt, answer, place in zip(prompt_ids, answer_ids, where):
        answer = answer + [tokenizer.eos_token_id]
        if len(prompt) + len(answer) > max_length:
            head = starts if prompt[: len(starts)] == starts else []
            room = max_length - len(answer) - len(head)
            if room < 1:
                too_long.append((place, len(answer)))
                continue
            prompt = head + prompt[len(head):][-room:]
            cut += 1
        pairs.append((prompt + answer, [-100] * len(prompt) + answer))
    if too_long:
        place, tokens = too_long[0]
        more = f" (and {len(too_long) - 1} more example(s))" if len(too_long) > 1 else ""
        raise ValueError(f"{place}: the answer is {tokens} tokens with the end-of-text, which leaves no room for the "
                         f"prompt within --max-length {max_length}{more}; answers are never cut: shorten them, or raise "
                         "--max-length (up to the model's context)")
    return pairs, cut


# ----------------------------------------------------------------------------------------------------------------
# model


def on_gpu() -> bool:
    """Whether the recipe trains on GPUs: the course's one device policy (``course_device()``: the GPU when PyTorch sees
    one, unless ``PEFTLAB_DEVICE=cpu``). With several processes, each takes the GPU of its LOCAL_RANK."""
    return course_device().type == "cuda"


def _dtype(config: FinetuneConfig) -> torch.dtype:
    if config.dtype != "auto":
        return getattr(torch, config.dtype)
    return torch.bfloat16 if on_gpu() and torch.cuda.is_bf16_supported() else torch.float32


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def load_model(config: FinetuneConfig):
    """``(model, tokenizer)``: the base model with peft's LoRA (over NF4 weights for QLoRA), ready to train."""
    import peft
    from transformers import set_seed

    from peftlab.production.bridges import (avoid_bitsandbytes_cpu_eval_trap, check_bitsandbytes_cpu_dequantization,
                                            nf4_quantization_config, to_peft_lora_config)

    name = str(bundled_model()) if config.model is None else config.model
    try:
        local = model_source(name)  # the course's checks, as load_base makes them
    except FileNotFoundError as error:
        raise ValueError(f"--model {error}") from None
    dtype = _dtype(config)
    kwargs = {"dtype": dtype}
    if config.method == "qlora":
        kwargs["quantization_config"] = nf4_quantization_config(dtype)
        if on_gpu():
            kwargs["device_map"] = {"": _local_rank()}  # each process quantizes its own copy on its own GPU
    try:
        model, tokenizer = load_causal_lm(name, local, **kwargs)
    except Exception as error:  # no such hub id, no network, a damaged or foreign folder: the user's input, not a bug
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--model {name!r} could not be loaded as a causal language model: {first}") from None
    if config.method == "qlora":
        check_bitsandbytes_cpu_dequantization(model)
        avoid_bitsandbytes_cpu_eval_trap(model)
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # the frozen embeddings' output must carry a gradient through the recompute
    set_seed(config.seed)  # the LoRA matrices start the same in every process and every run
    lora = to_peft_lora_config(config)  # a FinetuneConfig is a LoraConfig
    try:
        model = peft.get_peft_model(model, lora)
    except ValueError as error:  # peft's own words, e.g. a target module the model does not have
        targets = peft_target_modules(config)  # names, or one regular expression (a Python caller's re.compile)
        shown = targets if isinstance(targets, str) else " ".join(targets)
        raise ValueError(f"--targets {shown}: {str(error).strip().splitlines()[0]}") from None
    check_rank(model, config.r)
    return model, tokenizer


def check_rank(model, r: int) -> None:
    """Refuse a rank above a layer's smaller side, as the course's ``add_lora`` does: the update ``B @ A`` cannot have a
    rank above min(in, out), so the extra rows only cost memory and time."""
    for name, module in model.named_modules():
        sizes = (getattr(module, "in_features", None), getattr(module, "out_features", None))
        if hasattr(module, "lora_A") and all(isinstance(n, int) for n in sizes) and r > min(sizes):
            raise ValueError(f"--r {r} is larger than {name.removeprefix('base_model.model.')} allows "
                             f"({sizes[0]} in, {sizes[1]} out): a LoRA update has rank at most {min(sizes)}")


# ----------------------------------------------------------------------------------------------------------------
# the output folder: the user's, so nothing in it is touched until a run has finished

RUN_RECORD = "finetune.json"  # written last: a folder that has it holds a finished peftlab finetune run


def partial_folder(output: Path) -> Path:
    """Where a run writes until it has finished: beside the output folder, renamed onto it at the end, so that an
    interrupted run leaves the old folder as it was (or nothing) and never a half-written one that looks done."""
    return output.parent / f".{output.name}.peftlab-partial"


def check_output_folder(config: FinetuneConfig) -> Path:
    """The output folder, if a run may write there; else a ValueError that says why and what to do."""
    if not str(config.output_dir).strip():
        raise ValueError("--output is empty; name the folder for the adapter (it is created if missing)")
    output = Path(config.output_dir)
    if output.is_symlink():
        raise ValueError(f"--output {output} is a link; give the folder it points to, or a new folder")
    if output.resolve() == Path.cwd().resolve() or output.resolve() in Path.cwd().resolve().parents:
        raise ValueError(f"--output {output} is the folder you are in (or holds it); give a new folder for the run")
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; give a folder for the adapter (it is created if missing)")
    if config.model is not None and Path(config.model).exists():
        model = Path(config.model).resolve()
        if output.resolve() == model or model in output.resolve().parents:
            raise ValueError(f"--output {output} is inside the model's folder {config.model}; the run never writes there: "
                             "give a folder of its own")
    parent = output.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--output {output} lies inside {parent}, which is a file; give a folder's path")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--output {output}: no permission to write in {parent}; give a folder you can write to")
    if output.is_dir() and any(output.iterdir()):
        written = _files_of_a_run(output)
        if written is None:
            raise ValueError(f"--output {output} holds files that are not a peftlab finetune run; the run never "
                             "overwrites them: give a new or empty folder")
        others = sorted(p.name for p in output.iterdir() if p.name not in written)
        if others:
            raise ValueError(f"--output {output} holds an earlier run and files it did not write ({', '.join(others[:3])}"
                             f"{' ...' if len(others) > 3 else ''}); they are yours: move them, or give a new folder")
        if not config.overwrite:
            raise ValueError(f"--output {output} holds an earlier finished run; give a new folder, or --overwrite to "
                             "replace it (it is replaced only once the new run has finished)")
    return output


def _files_of_a_run(folder: Path) -> set[str] | None:
    """The names a finished run wrote into ``folder`` (its finetune.json lists them), or None if it holds no run."""
    try:
        record = json.loads((folder / RUN_RECORD).read_text())
    except (OSError, ValueError):  # no finetune.json, or one that is not this recipe's
        return None
    if not isinstance(record, dict) or "config" not in record:
        return None
    return set(record.get("files", RUN_FILES)) | {RUN_RECORD}


# what a run wrote before finetune.json listed its files: peft's adapter and model card, Trainer's arguments, a tokenizer
RUN_FILES = ("adapter_model.safetensors", "adapter_config.json", "README.md", "training_args.bin", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model",
             "added_tokens.json", "chat_template.jinja")


def _move_into_place(partial: Path, output: Path) -> None:
    """Rename the finished run onto ``output``; an earlier run there (checked by check_output_folder) goes last."""
    old = output.parent / f".{output.name}.peftlab-old"
    if old.exists():
        shutil.rmtree(old)
    if output.exists():
        output.rename(old)  # the earlier run stays whole until the new one is in place
    partial.rename(output)
    if old.exists():
        shutil.rmtree(old)


class NonFiniteLoss(ValueError):
    """The loss became NaN or infinite: the run stops there and saves nothing."""


def _stops_on_a_non_finite_loss(trainer_class, config: FinetuneConfig):
    class FiniteLossTrainer(trainer_class):
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)  # forward and backward
            what = None
            if not torch.isfinite(loss.detach()).all():
                what = f"the loss became {loss.detach().float().mean().item()}"
            elif not all(bool(p.grad.isfinite().all()) for p in model.parameters() if p.grad is not None):
                what = "a gradient became NaN or infinite"  # the loss is finite, but the step would poison the weights
            if what:
                raise NonFiniteLoss(f"{what} at step {self.state.global_step + 1}; nothing was saved. Lower --lr (now "
                                    f"{config.lr:g}){' or use --dtype float32' if config.dtype in ('float16', 'bfloat16') else ''}")
            return loss
    return FiniteLossTrainer


# ----------------------------------------------------------------------------------------------------------------
# training


def training_arguments(config: FinetuneConfig):
    from transformers import TrainingArguments

    gpu = on_gpu()
    arguments = dict(
        output_dir=str(partial_folder(Path(config.output_dir))), max_steps=config.steps, learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_steps, lr_scheduler_type="constant_with_warmup", weight_decay=config.weight_decay,
        seed=config.seed, data_seed=config.seed,
        average_tokens_across_devices=True,   # the loss is a mean over the whole global batch's answer tokens
        save_strategy="no", report_to=[], logging_steps=max(1, config.steps // 10), disable_tqdm=not config.progress,
        use_cpu=not gpu, bf16=gpu and _dtype(config) == torch.bfloat16,
        gradient_checkpointing=False,         # switched on (or not) in load_model, the one place that knows the method
        remove_unused_columns=False, dataloader_num_workers=0,
        ddp_find_unused_parameters=False,     # every LoRA matrix gets a gradient at every step
    )
    arguments.update(config.extra)
    try:
        return TrainingArguments(**arguments)
    except TypeError as error:  # a misspelt name in ``extra``
        raise ValueError(f"extra: {error} (extra takes transformers.TrainingArguments' own names)") from None


def _loss_in_the_bar():
    """Trainer's progress bar, with the logged loss shown on the bar instead of printed as a line of its own
    (Trainer prints every log as a dict: pages of output in a notebook)."""
    from transformers.trainer_callback import ProgressCallback

    class LossInTheBar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.3f}")

    return LossInTheBar()


def finetune(config: FinetuneConfig, callbacks: list | None = None) -> dict:
    """Train, save the adapter in peft's format (rank 0 only) and return a summary.

    ``callbacks``: transformers ``TrainerCallback``s to add (benchmarks/multi_gpu.py times steps with one).

    Saved in ``output_dir``: ``adapter_model.safetensors`` + ``adapter_config.json`` (peft loads them:
    ``PeftModel.from_pretrained(base, output_dir)``), the tokenizer, and ``finetune.json`` (this
    config, the number of processes, and the loss logged along the way).
    """
    import datasets
    from transformers import Trainer

    output = check_output_folder(config)     # before anything else: a run that may not write must not start
    partial = partial_folder(output)
    args = training_arguments(config)  # first: it sets up the processes (torch.distributed) when launched in several
    if args.process_index == 0 and partial.exists():
        shutil.rmtree(partial)  # left by a run that was killed outright: the name is this recipe's own
    if args.n_gpu > 1:
        warnings.warn(f"one process sees {args.n_gpu} GPUs: Trainer splits each batch of {config.batch_size} over each of "
                      f"them (DataParallel), so a step takes {args.train_batch_size} examples per accumulation step. For "
                      "data-parallel training start one process per GPU: accelerate launch --multi_gpu --num_processes "
                      f"{args.n_gpu} -m peftlab finetune ...; for one GPU, set CUDA_VISIBLE_DEVICES=0", stacklevel=2)
    prompts, answers, where = read_examples(config)  # a bad file stops the run here, before the model is loaded
    model, tokenizer = load_model(config)
    max_length = max_length_for(config, model.config)
    pairs, cut = encode_examples(tokenizer, prompts, answers, where, max_length)
    if cut and args.process_index == 0:
        print(f"peftlab finetune: {cut} of {len(pairs)} prompts were longer than --max-length {max_length} allows with "
              "their answer, and lost their first tokens", file=sys.stderr)
    examples = datasets.Dataset.from_dict({"input_ids": [ids for ids, _ in pairs], "labels": [labels for _, labels in pairs]})
    trainer = _stops_on_a_non_finite_loss(Trainer, config)(
        model=model, args=args, train_dataset=examples, callbacks=callbacks,
        data_collator=lambda rows: pad_batch([(row["input_ids"], row["labels"]) for row in rows], tokenizer.pad_token_id))
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if config.progress:
        trainer.add_callback(_loss_in_the_bar())
    main = trainer.is_world_process_zero()
    try:
        result = trainer.train()
        # args.train_batch_size is the batch of one process: batch_size x the GPUs it sees (more than one only when a
        # single process sees several GPUs: Trainer then splits each batch over them with torch's DataParallel)
        summary = {"config": asdict(config), "processes": args.world_size, "gpus_per_process": max(1, args.n_gpu),
                   "global_batch": args.train_batch_size * config.gradient_accumulation_steps * args.world_size,
                   "train_loss": result.training_loss, "max_length": max_length, "prompts_cut": cut,
                   "log": [row for row in trainer.state.log_history if "loss" in row]}
        trainer.save_model(str(partial))  # Trainer writes from the main process only (args.should_save)
        if main:
            tokenizer.save_pretrained(partial)
            summary["files"] = sorted(p.name for p in partial.iterdir()) + [RUN_RECORD]  # what --overwrite may replace
            (partial / RUN_RECORD).write_text(json.dumps(summary, indent=1) + "\n")  # last: the run is complete
            _move_into_place(partial, output)
    finally:
        if main and partial.exists():  # an error or an interrupt: nothing half-written is left behind
            shutil.rmtree(partial)
    return summary
