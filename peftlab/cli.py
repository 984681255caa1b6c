"""The ``peftlab`` command line.

    peftlab memory --model Llama-2-7B --method QLoRA --seq 2048 --gpu 24
    peftlab memory --config path/to/config.json --method LoRA --r 16 --gradient-checkpointing
    peftlab memory --model Llama-3.1-8B --method QLoRA --recipe "peft QLoRA" --optimizer "torch AdamW" --seq 4096
    peftlab memory --layers 32 --hidden 4096 --intermediate 11008 --heads 32 --kv-heads 32 --vocab 32000 --method "full fine-tuning"

    peftlab finetune --data addition --output runs/addition
    peftlab finetune --data my.jsonl --model path/to/model --method qlora --steps 1000 --lr 2e-4 --output runs/mine
    accelerate launch --multi_gpu --num_processes 2 -m peftlab finetune --data addition --output runs/addition

(also ``python -m peftlab ...``). Estimates come from ``peftlab.memory.training_memory``; training
from ``peftlab.production.finetune``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from peftlab.core import checks
from peftlab.core.inject import ALL_LINEAR
from peftlab.methods.names import FULL_FINE_TUNING, LORA
from peftlab import memory


def _shape(args) -> memory.ModelShape:
    numbers = [args.layers, args.hidden, args.intermediate, args.heads, args.vocab]
    given = sum(x is not None for x in (args.model, args.config)) + (any(n is not None for n in numbers))
    if given != 1:
        raise ValueError("describe the model one way: --model NAME, --config config.json, or all of --layers --hidden "
                         "--intermediate --heads --vocab (and optionally --kv-heads, --tied)")
    if args.model:
        return memory.ModelShape.known(args.model)
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ValueError(f"no config file at {path}")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not a JSON file ({error}); give a model's config.json") from None
        try:
            return memory.ModelShape.from_config(config)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    if any(n is None for n in numbers):
        raise ValueError("with numbers, give all of --layers --hidden --intermediate --heads --vocab")
    return memory.ModelShape(args.layers, args.hidden, args.intermediate, args.heads, args.kv_heads or args.heads,
                             args.vocab, args.tied)


def memory_report(args) -> str:
    shape = _shape(args)
    for gpu in args.gpu:
        checks.positive_number("--gpu", gpu, " (a GPU's memory in GB)")
    result = memory.training_memory(shape, args.method, seq=args.seq, batch=args.batch,
                                    gradient_checkpointing=args.gradient_checkpointing, optimizer=args.optimizer,
                                    r=args.r, targets=tuple(args.targets), double_quant=not args.no_double_quant,
                                    dtype=args.dtype, recipe=args.recipe)
    lora = f" (r={args.r} on {', '.join(args.targets)})" if "LoRA" in args.method else ""
    lines = [f"{shape.parameters() / 1e9:.2f}B parameters; {args.method}{lora}, recipe {args.recipe!r} "
             f"({memory.RECIPES[args.recipe].description}), {args.dtype}, seq {args.seq} x batch {args.batch}, "
             f"{args.optimizer}, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}"]
    for part, value in result["parts"].items():
        lines.append(f"  {part:24s} {value / memory.GB:9.2f} GB")
    peak = result["peak"] / memory.GB
    lines.append(f"  {'peak (estimated)':24s} {peak:9.2f} GB   (largest part: {result['dominant']})")
    if args.method == FULL_FINE_TUNING:
        lines.append("  (gradients and activations do not peak together: the peak holds the larger)")
    lines.append("  (the CUDA context and PyTorch's cache of freed blocks, often 0.5-2 GB, come on top)")
    if result["measured"]:
        lines.append("  measured: this method, recipe, dtype and optimizer were checked against GPU peaks (within 10%)")
    else:
        lines.append("  NOT MEASURED: this method, recipe, dtype and optimizer were never measured on a GPU; the count "
                     "follows the same rules, unchecked")
    for gpu in args.gpu:
        lines.append(f"  fits a {gpu:g} GB GPU: {'yes' if peak <= gpu else 'no'}")
    return "\n".join(lines)


# The finetune command's options are FinetuneConfig's fields (peftlab.production.finetune), made here one for one:
# "--" and the field's name, except these shorter names; "extra" (more TrainingArguments) is for Python only.
FLAGS = {"output_dir": "--output", "target_modules": "--targets", "gradient_accumulation_steps": "--accumulate",
         "warmup_steps": "--warmup"}
REQUIRED = ("data", "output_dir")
TYPES = {"int": int, "float": float, "str": str, "int | None": int, "str | None": str}  # by the field's annotation


def _finetune_fields():
    from peftlab.production.finetune import FinetuneConfig

    return [f for f in dataclasses.fields(FinetuneConfig) if f.name != "extra"]


def finetune_config(args):
    from peftlab.production.finetune import FinetuneConfig

    return FinetuneConfig(**{f.name: getattr(args, f.name) for f in _finetune_fields()})


def add_finetune_arguments(parser) -> None:
    from peftlab.course.train import TrainConfig
    from peftlab.methods.lora import LoraConfig
    from peftlab.production.finetune import DTYPES, HELP, METHODS, FinetuneConfig

    default = FinetuneConfig()
    choices = {"method": list(METHODS), "dtype": list(DTYPES)}
    lora, train = ({f.name for f in dataclasses.fields(c)} for c in (LoraConfig, TrainConfig))
    groups = {"run": parser.add_argument_group("data, model and output"),
              "lora": parser.add_argument_group("LoRA (the course's LoraConfig)"),
              "train": parser.add_argument_group("training (the course's TrainConfig, and Trainer's settings)")}

    def group(name: str) -> str:  # Trainer's own gradient_* settings go with training
        return "lora" if name in lora else "train" if name in train or name.startswith("gradient_") else "run"

    for f in sorted(_finetune_fields(), key=lambda f: list(groups).index(group(f.name))):
        value, flag = getattr(default, f.name), FLAGS.get(f.name, "--" + f.name.replace("_", "-"))
        options = {"dest": f.name, "help": HELP[f.name]}
        if isinstance(value, bool):  # a switch: --name turns it on, or --no-name off when it is on by default
            if value:
                flag, options["help"] = "--no-" + flag.removeprefix("--"), "without " + HELP[f.name]
            options.update(action="store_false" if value else "store_true")
        elif isinstance(value, tuple):
            options.update(nargs="+", default=list(value))
        elif f.name in REQUIRED:
            options.update(required=True, type=TYPES[f.type])
        else:
            options.update(default=value, type=TYPES[f.type], choices=choices.get(f.name))
        groups[group(f.name)].add_argument(flag, **options)


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each option's default, where there is one to show (not for switches or required options)."""

    def _get_help_string(self, action):
        if action.required or action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake told in one line (argparse's own prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists every option)\n")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before or after the work (while the libraries load): one line, no traceback
        if int(os.environ.get("RANK", 0)) == 0:
            print("peftlab: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = Parser(prog="peftlab")
    commands = parser.add_subparsers(dest="command", required=True)
    tune = commands.add_parser("finetune", help="train a LoRA or QLoRA adapter with transformers' Trainer + peft",
                               formatter_class=DefaultsHelp)
    add_finetune_arguments(tune)
    mem = commands.add_parser("memory", help="estimate peak GPU memory of training a decoder model",
                              formatter_class=DefaultsHelp)
    mem.add_argument("--model", choices=list(memory.KNOWN_SHAPES))
    mem.add_argument("--config", help="a transformers config.json (Llama-style decoder; head_dim is read when set)")
    for name in ("layers", "hidden", "intermediate", "heads", "kv-heads", "vocab"):
        mem.add_argument(f"--{name}", type=int)
    mem.add_argument("--tied", action="store_true", help="input and output embeddings share weights")
    mem.add_argument("--method", default=LORA, choices=list(memory.METHOD_MEMORY), help="the method to count")
    mem.add_argument("--r", type=int, default=8, help="LoRA rank")
    mem.add_argument("--targets", nargs="+", default=list(ALL_LINEAR), help="LoRA target modules")
    mem.add_argument("--seq", type=int, default=512)
    mem.add_argument("--batch", type=int, default=1)
    mem.add_argument("--gradient-checkpointing", action="store_true")
    mem.add_argument("--optimizer", default="AdamW 32-bit", choices=list(memory.OPTIMIZERS))
    mem.add_argument("--recipe", default="16-bit", choices=list(memory.RECIPES),
                     help="how weights are stored and computed: " + "; ".join(
                         f"{name}: {r.description}" for name, r in memory.RECIPES.items()))
    mem.add_argument("--dtype", default="bf16", choices=list(memory.DTYPE_BYTES), help="the model's weights")
    mem.add_argument("--no-double-quant", action="store_true", help="QLoRA without double quantization")
    mem.add_argument("--gpu", type=float, nargs="*", default=list(memory.GPUS_GB), help="GPU sizes in GB to check")
    args = parser.parse_args(argv)
    if args.command == "finetune":
        return run_finetune(args)
    try:
        print(memory_report(args))
    except ValueError as error:
        print(f"peftlab memory: error: {error}", file=sys.stderr)
        return 2
    return 0


def run_finetune(args) -> int:
    from peftlab.production.finetune import finetune

    try:
        summary = finetune(finetune_config(args))
    except (ValueError, FileNotFoundError) as error:  # bad input: one line that says what is wrong, no traceback
        print(f"peftlab finetune: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C reaches every process of a launch; one of them says so
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"peftlab finetune: interrupted; nothing was written to {args.output_dir}", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"trained {summary['config']['steps']} steps on {summary['processes']} process(es), global batch "
              f"{summary['global_batch']}: mean loss {summary['train_loss']:.4f}; adapter in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
