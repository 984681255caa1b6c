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
prompt column and an answer column. The model learns to write the answer after the prompt, as in
the course: the loss counts only the answer tokens and the end-of-text after them.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from peftlab.core import checks
from peftlab.core.inject import ALL_LINEAR
from peftlab.course.data import data_path
from peftlab.course.tasks import TASK_NAMES
from peftlab.course.train import collate

METHODS = ("lora", "qlora")
DATA_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv"}


@dataclass
class FinetuneConfig:
    data: str = "addition"                # a course task's name, or a .jsonl / .csv file
    output_dir: str = "finetuned"         # the adapter (peft's format), the tokenizer and finetune.json
    model: str | None = None              # None: the course's bundled base model; else a hub id or a local folder
    method: str = "lora"                  # "lora", or "qlora": the frozen weights in NF4 through bitsandbytes
    prompt_column: str = "prompt"
    answer_column: str = "answer"
    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ALL_LINEAR  # the QLoRA paper's advice: every linear layer
    steps: int = 300                      # optimizer steps (each one global batch)
    lr: float = 3e-3                      # right for this small model's LoRA; a 7B model wants about 1e-4 to 2e-4
    batch_size: int = 8                   # per process and per accumulation step
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 20
    seed: int = 0
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, about 1/3 more time
    dtype: str = "auto"                   # "auto": bfloat16 on a GPU that has it, else float32
    progress: bool = True                 # Trainer's tqdm bar (tqdm.auto)
    extra: dict = field(default_factory=dict)  # more transformers.TrainingArguments, by name
    overwrite: bool = False               # replace output_dir when it holds an earlier peftlab finetune run (only then)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; the recipe trains one of {METHODS}")
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)
        for name in ("steps", "batch_size", "gradient_accumulation_steps", "r"):
            checks.whole_number(name, getattr(self, name))
        checks.whole_number("warmup_steps", self.warmup_steps, minimum=0)
        checks.whole_number("seed", self.seed, minimum=0)
        checks.positive_number("lr", self.lr, " (a learning rate; a 7B model wants about 1e-4)")
        checks.positive_number("alpha", self.alpha, " (LoRA's update is scaled by alpha / r)")
        checks.fraction("dropout", self.dropout)
        if not self.target_modules:
            raise ValueError("target_modules is empty: name the layers LoRA adapts (default: every linear layer)")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")


# ----------------------------------------------------------------------------------------------------------------
# data


def data_file(data: str) -> Path:
    """The file behind ``--data``: a course task's training split, or the user's own file."""
    if data in TASK_NAMES:
        return data_path("tasks", data, "train.jsonl")
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"--data {data!r} is neither a course task ({', '.join(TASK_NAMES)}) nor an existing file")
    if path.suffix.lower() not in DATA_FORMATS:
        raise ValueError(f"{path}: unknown format {path.suffix!r}; give a .jsonl (one JSON object a line) or .csv file")
    return path


MISSING_MARKERS = ("nan", "null")  # what spreadsheets and pandas write for an empty cell (compared lower-case)


def _text_file(path: Path) -> list[str]:
    """The file's lines, decoded as UTF-8; a byte that is not UTF-8 stops here, naming its line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text (byte {raw[error.start]:#04x}); save the file as UTF-8")


def _rows_of_csv(path: Path) -> tuple[list[str], list[tuple[int, dict]], str]:
    """(columns, [(line, row)], "line"): every cell exactly as written, as text (no type guessing: '007' stays '007')."""
    reader = csv.DictReader(_text_file(path))
    rows = []
    try:
        for row in reader:
            if None in row:
                raise ValueError(f"{path}, line {reader.line_num}: more cells than the header's "
                                 f"{len(reader.fieldnames)} columns (a comma inside a cell needs quotes)")
            rows.append((reader.line_num, row))
    except csv.Error as error:
        raise ValueError(f"{path}, line {reader.line_num}: {error}") from None
    return list(reader.fieldnames or []), rows, "line"


def _json_text(value, where: str) -> str:
    if isinstance(value, str):  # numbers arrive as their own text (parse_int/parse_float=str): 1.50 stays '1.50'
        return value
    kind = {type(None): "null", bool: "true/false", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
    raise ValueError(f"{where} is {kind}; every prompt and answer must be text (a JSON string)")


def _rows_of_json(path: Path) -> tuple[list[str], list[tuple[int, dict]], str]:
    """(columns, [(number, row)], "line" or "item") of a JSON Lines file (one object a line), or of a .json file holding one list."""
    lines = _text_file(path)
    parse = functools.partial(json.loads, parse_int=str, parse_float=str)
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
    prompts, answers = [], []
    for number, row in rows:
        for column, into in ((config.prompt_column, prompts), (config.answer_column, answers)):
            where = f"{path}, {unit} {number}, column {column!r}"
            if column not in row:
                raise ValueError(f"{where} is missing; every example needs a prompt and an answer")
            value = _json_text(row[column], where)
            if not value.strip() or value.strip().lower() in MISSING_MARKERS:
                raise ValueError(f"{where} is {'empty' if not value.strip() else repr(value) + ', an empty cell'}; "
                                 "every example needs a prompt and an answer (remove the example or fill it in)")
            into.append(value)
    return datasets.Dataset.from_dict({"prompt": prompts, "answer": answers})


# ----------------------------------------------------------------------------------------------------------------
# model


def _dtype(config: FinetuneConfig) -> torch.dtype:
    if config.dtype != "auto":
        return getattr(torch, config.dtype)
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def load_model(config: FinetuneConfig):
    """``(model, tokenizer)``: the base model with peft's LoRA (over NF4 weights for QLoRA), ready to train."""
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, set_seed

    name = str(data_path("base")) if config.model is None else config.model
    local = Path(name).exists()
    if not local and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        raise ValueError(f"--model {name!r} is not a local folder, and the hub is switched off (HF_HUB_OFFLINE="
                         f"{os.environ['HF_HUB_OFFLINE']}); give the folder of a downloaded model, or go online")
    dtype = _dtype(config)
    kwargs = {"dtype": dtype, "local_files_only": local}
    if config.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": _local_rank()}  # each process quantizes its own copy on its own GPU
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except OSError as error:  # no such hub id, no network, or a folder that is not a model
        raise ValueError(f"--model {name!r} could not be loaded: {error}".splitlines()[0]) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.method == "qlora":
        from peftlab.production import avoid_bitsandbytes_cpu_eval_trap, check_bitsandbytes_cpu_dequantization

        check_bitsandbytes_cpu_dequantization(model)
        avoid_bitsandbytes_cpu_eval_trap(model)
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # the frozen embeddings' output must carry a gradient through the recompute
    set_seed(config.seed)  # the LoRA matrices start the same in every process and every run
    lora = peft.LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                           target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    return peft.get_peft_model(model, lora), tokenizer


# ----------------------------------------------------------------------------------------------------------------
# the output folder: the user's, so nothing in it is touched until a run has finished

RUN_RECORD = "finetune.json"  # written last: a folder that has it holds a finished peftlab finetune run


def partial_folder(output: Path) -> Path:
    """Where a run writes until it has finished: beside the output folder, renamed onto it at the end, so that an
    interrupted run leaves the old folder as it was (or nothing) and never a half-written one that looks done."""
    return output.parent / f".{output.name}.peftlab-partial"


def check_output_folder(config: FinetuneConfig) -> Path:
    """The output folder, if a run may write there; else a ValueError that says why and what to do."""
    output = Path(config.output_dir)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; give a folder for the adapter (it is created if missing)")
    if config.model is not None and Path(config.model).exists():
        model = Path(config.model).resolve()
        if output.resolve() == model or model in output.resolve().parents:
            raise ValueError(f"--output {output} is inside the model's folder {config.model}; the run never writes there: "
                             "give a folder of its own")
    if output.is_dir() and any(output.iterdir()):
        if not (output / RUN_RECORD).exists():
            raise ValueError(f"--output {output} holds files that are not a peftlab finetune run; the run never "
                             "overwrites them: give a new or empty folder")
        if not config.overwrite:
            raise ValueError(f"--output {output} holds an earlier finished run; give a new folder, or --overwrite to "
                             "replace it (it is replaced only once the new run has finished)")
    return output


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
            loss = super().training_step(model, inputs, num_items_in_batch)
            if not torch.isfinite(loss.detach()).all():
                raise NonFiniteLoss(f"the loss became {loss.detach().float().mean().item()} at step "
                                    f"{self.state.global_step + 1}; nothing was saved. Lower --lr (now {config.lr:g})"
                                    f"{' or use --dtype float32' if config.dtype in ('float16', 'bfloat16') else ''}")
            return loss
    return FiniteLossTrainer


# ----------------------------------------------------------------------------------------------------------------
# training


def training_arguments(config: FinetuneConfig):
    from transformers import TrainingArguments

    on_gpu = torch.cuda.is_available()
    arguments = dict(
        output_dir=str(partial_folder(Path(config.output_dir))), max_steps=config.steps, learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_steps, lr_scheduler_type="constant_with_warmup", weight_decay=0.0,
        seed=config.seed, data_seed=config.seed,
        average_tokens_across_devices=True,   # the loss is a mean over the whole global batch's answer tokens
        save_strategy="no", report_to=[], logging_steps=max(1, config.steps // 10), disable_tqdm=not config.progress,
        use_cpu=not on_gpu, bf16=on_gpu and _dtype(config) == torch.bfloat16,
        gradient_checkpointing=False,         # switched on (or not) in load_model, the one place that knows the method
        remove_unused_columns=False, dataloader_num_workers=0,
        ddp_find_unused_parameters=False,     # every LoRA matrix gets a gradient at every step
    )
    arguments.update(config.extra)
    return TrainingArguments(**arguments)


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
    with args.main_process_first():    # the first process reads and caches the data; the others then read its cache
        examples = load_examples(config)
    model, tokenizer = load_model(config)
    trainer = _stops_on_a_non_finite_loss(Trainer, config)(
        model=model, args=args, train_dataset=examples, data_collator=functools.partial(collate, tokenizer),
        callbacks=callbacks)
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
                   "train_loss": result.training_loss,
                   "log": [row for row in trainer.state.log_history if "loss" in row]}
        trainer.save_model(str(partial))  # Trainer writes from the main process only (args.should_save)
        if main:
            tokenizer.save_pretrained(partial)
            (partial / RUN_RECORD).write_text(json.dumps(summary, indent=1) + "\n")  # last: the run is complete
            _move_into_place(partial, output)
    finally:
        if main and partial.exists():  # an error or an interrupt: nothing half-written is left behind
            shutil.rmtree(partial)
    return summary
