"""Measure peak GPU memory of training steps, for checking ``peftlab.memory`` against reality.

    python benchmarks/gpu_memory.py --out data/results/gpu_memory.json [--sizes Llama-3.2-1B ...]
    python benchmarks/gpu_memory.py --out rows.json --recipe "peft QLoRA" --sizes Qwen2-0.5B --batches 1 4

Needs a CUDA GPU with room for the largest row (an 8B model with full fine-tuning: about 115 GB),
transformers, peft and bitsandbytes. The models are Llama-shaped with random weights: memory
does not depend on the values. For each model size and method (full fine-tuning, LoRA, QLoRA)
it runs two training steps at each sequence length, with and without gradient checkpointing,
and records ``torch.cuda.max_memory_allocated()`` over those steps (what PyTorch's allocator
handed out; the CUDA context and the allocator's cache come on top and are not counted).

Recipe of every row: batch 1 (``--batch``), random token ids as inputs and labels, bf16 weights (QLoRA: NF4
with double quantization, bf16 compute), LoRA r=16 alpha=32 on all linear layers of the decoder
(peft keeps adapter weights in fp32), SDPA attention, bitsandbytes' AdamW with 32-bit states
(``bnb.optim.AdamW``, optim_bits=32; one full fine-tuning row per size also with ``AdamW8bit``).

Other recipes (``--recipe``), each what a common setup does, everything else as above:
- "peft QLoRA": peft's documented QLoRA recipe: the NF4 model marked as loaded in 4 bits, then
  ``peft.prepare_model_for_kbit_training`` (it casts every weight not in 4 bits -- embeddings, norms,
  output layer -- to fp32, and with its default ``use_gradient_checkpointing=True`` turns on transformers'
  reentrant gradient checkpointing), then LoRA; ``torch.optim.AdamW`` (transformers Trainer's default).
  "Gradient checkpointing off" rows pass ``use_gradient_checkpointing=False``.
- "torch AdamW": bf16 weights and ``torch.optim.AdamW``, whose states take each parameter's dtype
  (bf16 for full fine-tuning; fp32 for peft's LoRA weights).
- "fp32 + bf16 autocast": mixed precision as transformers' ``Trainer(bf16=True)`` runs it: fp32 weights,
  the forward pass and loss under ``torch.autocast("cuda", torch.bfloat16)``, ``torch.optim.AdamW``.
Shapes that would not fit are recorded with ``"out_of_memory": true`` and no peak.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peftlab import ALL_LINEAR, memory  # noqa: E402
from peftlab.course.measure import describe_machine  # noqa: E402
from peftlab.methods.names import FULL_FINE_TUNING, LORA, QLORA  # noqa: E402

# The shapes measured: the calculator's published shapes (peftlab.memory.KNOWN_SHAPES) and four more, each from its
# model's config.json; a model is built from the shape's config keys (ModelShape.to_config).
PUBLISHED = {**memory.KNOWN_SHAPES,
             "Mistral-7B-v0.1": memory.ModelShape(32, 4096, 14336, 32, 8, 32000),
             # Qwen2: a 152k vocabulary, few key-value heads (6-7 query heads share each), biases on q, k and v
             "Qwen2-0.5B": memory.ModelShape(24, 896, 4864, 14, 2, 151936, tied_embeddings=True),
             "Qwen2-1.5B": memory.ModelShape(28, 1536, 8960, 12, 2, 151936, tied_embeddings=True),
             "Qwen2-7B": memory.ModelShape(28, 3584, 18944, 28, 4, 152064)}
SHAPES = {name: PUBLISHED[name].to_config() for name in ("Llama-3.2-1B", "Llama-3.2-3B", "Llama-2-7B", "Llama-3.1-8B",
                                                         "Mistral-7B-v0.1", "Qwen2-0.5B", "Qwen2-1.5B", "Qwen2-7B")}
RECIPES = ("bf16 + bnb AdamW 32-bit", "peft QLoRA", "torch AdamW", "fp32 + bf16 autocast")
# the rows name recipe and optimizer as peftlab.memory does: its "16-bit" recipe with either optimizer
MEMORY_RECIPE = {"bf16 + bnb AdamW 32-bit": "16-bit", "torch AdamW": "16-bit"}
LINEAR = list(ALL_LINEAR)
LORA_R = 16


def build(size: str, method: str, recipe: str = RECIPES[0], checkpointing: bool = False):
    import bitsandbytes as bnb
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_class, model_class = (Qwen2Config, Qwen2ForCausalLM) if size.startswith("Qwen2") else (LlamaConfig,
                                                                                                  LlamaForCausalLM)
    config = config_class(**SHAPES[size], max_position_embeddings=8192, use_cache=False)
    config._attn_implementation = "sdpa"
    dtype = torch.float32 if recipe == "fp32 + bf16 autocast" else torch.bfloat16
    with torch.device("cuda"):
        model = model_class._from_config(config, torch_dtype=dtype)
    if method == QLORA:  # what BitsAndBytesConfig(load_in_4bit, nf4, double quant, bf16 compute) builds
        for layer in model.model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for name, child in list(parent.named_children()):
                    if isinstance(child, torch.nn.Linear):
                        q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                              compute_dtype=torch.bfloat16, compress_statistics=True,
                                              quant_type="nf4", device="meta")
                        q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                                     quant_type="nf4").to("cuda")
                        if child.bias is not None:
                            q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                        setattr(parent, name, q)
                        del child
        gc.collect()
        torch.cuda.empty_cache()
        if recipe == "peft QLoRA":
            import peft

            model.is_loaded_in_4bit = True  # what from_pretrained(quantization_config=...) sets; prepare reads it
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    if method in (LORA, QLORA):
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, lora_dropout=0.0,
                                                           target_modules=LINEAR, task_type="CAUSAL_LM"))
    return model


def set_checkpointing(model, on: bool):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if on:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_disable()


def measure(model, seq: int, batch: int, optimizer_name: str, steps: int = 2, autocast: bool = False) -> dict:
    import contextlib

    import bitsandbytes as bnb

    params = [p for p in model.parameters() if p.requires_grad]
    make = {"AdamW 32-bit": lambda: bnb.optim.AdamW(params, lr=1e-5, optim_bits=32),
            "AdamW 8-bit": lambda: bnb.optim.AdamW8bit(params, lr=1e-5),
            "torch AdamW": lambda: torch.optim.AdamW(params, lr=1e-5)}[optimizer_name]
    forward_context = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext
    model.train()
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    static = torch.cuda.memory_allocated()
    optimizer = make()
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device="cuda")
    after_forward = []
    start = time.perf_counter()
    for _ in range(steps):
        with forward_context():
            loss = model(input_ids=ids, labels=ids).loss
        after_forward.append(torch.cuda.memory_allocated())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated()
    states = torch.cuda.memory_allocated() - static
    del optimizer, ids
    gc.collect()
    torch.cuda.empty_cache()
    return {"static_bytes": static, "optimizer_state_bytes": states, "after_forward_bytes": max(after_forward),
            "peak_bytes": peak, "seconds": round(seconds, 3)}


METHODS = {RECIPES[0]: (FULL_FINE_TUNING, LORA, QLORA), "peft QLoRA": (QLORA,),
           "torch AdamW": (FULL_FINE_TUNING, LORA), "fp32 + bf16 autocast": (FULL_FINE_TUNING, LORA)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--append", action="store_true", help="keep the rows already in --out")
    parser.add_argument("--recipe", choices=RECIPES, default=RECIPES[0])
    parser.add_argument("--sizes", nargs="+", default=["Llama-3.2-1B", "Llama-3.2-3B", "Llama-3.1-8B"])
    parser.add_argument("--methods", nargs="+", default=None, help="default: the recipe's methods")
    parser.add_argument("--seqs", nargs="+", type=int, default=[512, 2048])
    parser.add_argument("--batches", nargs="+", type=int, default=[1])
    parser.add_argument("--checkpointing", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--set", default=None, help='what the rows are for: "calibration" or "held out"')
    args = parser.parse_args()

    stored = json.load(open(args.out)) if args.append else {}
    rows = stored.get("rows", [])
    environment = describe_machine("cuda")  # gpu, torch, transformers, peft, bitsandbytes, python, ...
    optimizer_name = "AdamW 32-bit" if args.recipe == RECIPES[0] else "torch AdamW"
    for size in args.sizes:
        for method in args.methods or METHODS[args.recipe]:
            model = None
            for ckpt in [c == "on" for c in args.checkpointing]:
                if model is None or args.recipe == "peft QLoRA":  # that recipe sets checkpointing as it builds
                    del model
                    gc.collect()
                    torch.cuda.empty_cache()
                    model = build(size, method, args.recipe, ckpt)
                if args.recipe != "peft QLoRA":
                    set_checkpointing(model, ckpt)
                variants = [(batch, seq, optimizer_name) for batch in args.batches for seq in args.seqs]
                if method == FULL_FINE_TUNING and args.recipe == RECIPES[0] and not ckpt:
                    variants.append((args.batches[0], args.seqs[0], "AdamW 8-bit"))
                for batch, seq, optimizer in variants:
                    row = {"model": size, **SHAPES[size], "recipe": MEMORY_RECIPE.get(args.recipe, args.recipe),
                           "method": method, "seq": seq,
                           "batch": batch, "gradient_checkpointing": ckpt, "optimizer": optimizer,
                           "lora_r": LORA_R if method != FULL_FINE_TUNING else None,
                           "lora_targets": LINEAR if method != FULL_FINE_TUNING else None}
                    try:
                        row.update(measure(model, seq, batch, optimizer, autocast=args.recipe == "fp32 + bf16 autocast"))
                    except torch.cuda.OutOfMemoryError:
                        row["out_of_memory"] = True
                    if row.get("out_of_memory"):  # out of the except block: the traceback no longer holds the step
                        model.zero_grad(set_to_none=True)
                        gc.collect()
                        torch.cuda.empty_cache()
                    if args.set:
                        row["set"] = args.set
                    rows.append(row)
                    peak = f"{row['peak_bytes'] / 2**30:7.2f} GiB" if "peak_bytes" in row else "out of memory"
                    print(f"{size:15s} {args.recipe[:12]:12s} {method:17s} b{batch} seq {seq:5d} ckpt {ckpt:d} "
                          f"{optimizer:12s} peak {peak}", flush=True)
                    with open(args.out, "w") as f:  # rewritten after every row: a timeout keeps what was measured
                        json.dump({**stored, "environment": environment, "recipe": __doc__.split("\n\n")[2],
                                   "rows": rows}, f, indent=1)
            del model
            gc.collect()
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
