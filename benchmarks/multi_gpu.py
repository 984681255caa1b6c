"""The production recipe (peftlab.production.finetune) on one GPU and on two, side by side: the same
global batch, throughput, scaling efficiency, per-GPU peaks against the calculator, and whether the adapters agree.

A Llama-3.1-8B shape with random weights (bf16), sequences of about 4096 tokens, LoRA r = 8 on every
linear layer; and the same with QLoRA (NF4 through bitsandbytes, peft's prepare_model_for_kbit_training).
Each run trains the same global batch: two processes x batch B, or one process x batch B x 2 accumulated.
B is the largest batch one GPU holds without gradient checkpointing (by the memory calculator: for 8B at
4096 tokens, 2). Recorded per run and per process: the time of every step (CUDA-synchronised), tokens per
second (median over the steps after the warm-up), peak allocated memory; then the two adapters are compared.

    python benchmarks/multi_gpu.py prepare --shape Llama-3.1-8B --seq 4096 --examples 64 --dir /tmp/mg
    NCCL_NVLS_ENABLE=0 accelerate launch --multi_gpu --num_processes 2 benchmarks/multi_gpu.py train --dir /tmp/mg \\
        --method lora --batch 2 --steps 8 --name lora-2gpu
    python benchmarks/multi_gpu.py train --dir /tmp/mg --method lora --batch 2 --accumulate 2 --steps 8 --name lora-1gpu
    (the same with --method qlora)
    python benchmarks/multi_gpu.py report --dir /tmp/mg --out data/results/multi_gpu.json

Needs CUDA GPUs, transformers, peft, bitsandbytes and accelerate. The weights are random: the loss is
meaningless, the speed and memory are those of the real shape.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peftlab import memory  # noqa: E402
from peftlab.production.finetune import METHODS as FINETUNE_METHODS  # noqa: E402

GB = 1e9
# the shapes of the memory calculator, and a tiny one that runs the whole script on a CPU in seconds (a smoke test)
SHAPES = {**memory.KNOWN_SHAPES, "tiny": memory.ModelShape(2, 64, 128, 4, 2, 804)}
CUDA = torch.cuda.is_available()


def _synchronize() -> None:
    if CUDA:
        torch.cuda.synchronize()


def prepare(args) -> None:
    """A random-weight model folder (bf16) with the course's tokenizer, and a JSONL of long examples."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftlab.course.model import load_base
    from peftlab.course.tasks import load_stories

    folder = Path(args.dir)
    shape = SHAPES[args.shape]
    _, tokenizer = load_base()
    config = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
                         num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab,
                         max_position_embeddings=max(8192, args.seq), tie_word_embeddings=shape.tied_embeddings,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if CUDA else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    del model
    # examples: a prompt of held-out stories cut to seq - 8 tokens, and the next 4 words as the answer
    ids = tokenizer(" ".join(load_stories()), add_special_tokens=False)["input_ids"]
    rows = []
    for i in range(args.examples):
        start = (i * 997) % (len(ids) - args.seq)
        prompt = tokenizer.decode(ids[start : start + args.seq - 8])
        answer = " " + " ".join(tokenizer.decode(ids[start + args.seq - 8 : start + args.seq + 8]).split()[:4])
        rows.append({"prompt": prompt, "answer": answer})
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lengths = [len(tokenizer(r["prompt"] + r["answer"])["input_ids"]) for r in rows]
    prepared = {"command": " ".join(sys.argv), "shape": args.shape, "seq": args.seq, "examples": len(rows),
                "tokens": [min(lengths), max(lengths)]}
    (folder / "prepared.json").write_text(json.dumps(prepared) + "\n")
    print(f"model ({shape.parameters() / 1e9:.2f}B) and {len(rows)} examples of {min(lengths)}-{max(lengths)} tokens "
          f"in {folder}")


def train(args) -> None:
    from transformers import TrainerCallback

    from peftlab.production.finetune import FinetuneConfig, finetune

    folder = Path(args.dir)
    rank = int(os.environ.get("RANK", 0))
    steps: list[dict] = []

    class StepTimer(TrainerCallback):
        """The time from the end of one optimizer step to the end of the next: loading, forward and backward passes
        (all accumulated batches), the gradient all-reduce and the update."""

        def on_train_begin(self, *_, **__):
            _synchronize()
            steps.append(time.perf_counter())

        def on_step_end(self, *_, **__):
            _synchronize()
            steps.append(time.perf_counter())

    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    config = FinetuneConfig(data=str(folder / "data.jsonl"), output_dir=str(folder / args.name), model=str(folder / "model"),
                            method=args.method, r=args.r, alpha=2 * args.r, steps=args.steps, lr=1e-4,
                            batch_size=args.batch, gradient_accumulation_steps=args.accumulate, warmup_steps=0,
                            progress=False)
    summary = finetune(config, callbacks=[StepTimer()])
    record = {"name": args.name, "method": args.method, "rank": rank, "processes": summary["processes"],
              "global_batch": summary["global_batch"], "batch": args.batch, "accumulate": args.accumulate,
              "step_seconds": [b - a for a, b in zip(steps, steps[1:])],
              "peak_allocated_gb": torch.cuda.max_memory_allocated() / GB if CUDA else 0.0,
              "peak_reserved_gb": torch.cuda.max_memory_reserved() / GB if CUDA else 0.0,
              "gpu": torch.cuda.get_device_name() if CUDA else "cpu",
              "losses": [row["loss"] for row in summary["log"]]}
    (folder / f"{args.name}.rank{rank}.json").write_text(json.dumps(record) + "\n")
    print(f"{args.name} rank {rank}: steps {['%.2f' % s for s in record['step_seconds']]} s, "
          f"peak {record['peak_allocated_gb']:.1f} GB, losses {['%.3f' % x for x in record['losses']]}")


def _adapter_difference(a: Path, b: Path) -> dict:
    from safetensors.torch import load_file

    x, y = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    if x.keys() != y.keys():
        raise ValueError(f"{a} and {b} hold different tensors")
    diff = torch.cat([(x[k].float() - y[k].float()).flatten() for k in x])
    ref = torch.cat([x[k].float().flatten() for k in x])
    b_diff = torch.cat([(x[k].float() - y[k].float()).flatten() for k in x if "lora_B" in k])
    b_ref = torch.cat([x[k].float().flatten() for k in x if "lora_B" in k])
    return {"max_abs": float(diff.abs().max()), "relative_norm": float(diff.norm() / ref.norm()),
            "lora_B_relative_norm": float(b_diff.norm() / b_ref.norm()), "tensors": len(x)}


def report(args) -> None:
    folder = Path(args.dir)
    prepared = json.loads((folder / "prepared.json").read_text())
    shape = SHAPES[prepared["shape"]]
    out = {"command": args.made_by or " ".join(sys.argv), "prepared": prepared, "runs": {}, "comparisons": {}}
    for method, recipe in (("lora", "16-bit"), ("qlora", "peft QLoRA")):
        calculator_method = FINETUNE_METHODS[method]
        runs = {}
        for gpus in (1, 2):
            name = f"{method}-{gpus}gpu"
            ranks = [json.loads(p.read_text()) for p in sorted(folder.glob(f"{name}.rank*.json"))]
            if not ranks:
                continue
            # the first steps warm up; a step ends when the slowest process has its update, so take the slower rank
            timed = [max(times) for times in zip(*(r["step_seconds"][args.skip:] for r in ranks))]
            step = statistics.median(timed)
            tokens = ranks[0]["global_batch"] * prepared["seq"]
            per_process_batch = ranks[0]["batch"]
            estimate = memory.training_memory(shape, calculator_method, seq=prepared["seq"], batch=per_process_batch,
                                              r=args.r, recipe=recipe, optimizer="torch AdamW")["peak"] / GB
            runs[gpus] = {"step_seconds": step, "mean_step_seconds": statistics.mean(timed), "timed": timed,
                          "tokens_per_second": tokens / step, "timed_steps": len(timed),
                          "peak_allocated_gb": [r["peak_allocated_gb"] for r in ranks],
                          "peak_reserved_gb": [r["peak_reserved_gb"] for r in ranks],
                          "estimate_gb": estimate,
                          "estimate_error": [r["peak_allocated_gb"] / estimate - 1 for r in ranks],
                          "global_batch": ranks[0]["global_batch"], "per_process_batch": per_process_batch,
                          "losses": ranks[0]["losses"], "gpu": ranks[0]["gpu"]}
        out["runs"][method] = runs
        if 1 in runs and 2 in runs:
            out["comparisons"][method] = {
                "scaling_efficiency": runs[2]["tokens_per_second"] / (2 * runs[1]["tokens_per_second"]),
                "scaling_efficiency_of_means": runs[1]["mean_step_seconds"] / (2 * runs[2]["mean_step_seconds"]),
                "adapter_difference": _adapter_difference(folder / f"{method}-1gpu", folder / f"{method}-2gpu")}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for method, runs in out["runs"].items():
        for gpus, run in runs.items():
            print(f"{method} {gpus} GPU: step {run['step_seconds']:.2f} s (median; mean {run['mean_step_seconds']:.2f}), "
                  f"{run['tokens_per_second']:.0f} tokens/s, peak "
                  f"{', '.join('%.1f' % p for p in run['peak_allocated_gb'])} GB per GPU (estimate {run['estimate_gb']:.1f})")
        if method in out["comparisons"]:
            c = out["comparisons"][method]
            print(f"{method}: scaling efficiency {c['scaling_efficiency']:.3f} "
                  f"(of means {c['scaling_efficiency_of_means']:.3f}); adapters differ by "
                  f"{c['adapter_difference']['relative_norm']:.2e} (relative norm), {c['adapter_difference']['max_abs']:.2e} max")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare")
    p.add_argument("--shape", default="Llama-3.1-8B", choices=list(SHAPES))
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--dir", required=True)
    t = commands.add_parser("train")
    t.add_argument("--dir", required=True)
    t.add_argument("--method", choices=["lora", "qlora"], required=True)
    t.add_argument("--batch", type=int, required=True)
    t.add_argument("--accumulate", type=int, default=1)
    t.add_argument("--steps", type=int, default=8)
    t.add_argument("--r", type=int, default=8)
    t.add_argument("--name", required=True)
    r = commands.add_parser("report")
    r.add_argument("--dir", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--r", type=int, default=8)
    r.add_argument("--made-by", help="the command that made the runs, to store with them")
    r.add_argument("--skip", type=int, default=4, help="warm-up steps left out of the timing")
    args = parser.parse_args()
    {"prepare": prepare, "train": train, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
