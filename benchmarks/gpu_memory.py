"""Measure peak GPU memory of training steps, for checking ``peftlab.tools.memory`` against reality.

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
import platform
import time

import torch

SHAPES = {  # from the models' published config.json files
    "Llama-3.2-1B": dict(num_hidden_layers=16, hidden_size=2048, intermediate_size=8192, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "Llama-3.2-3B": dict(num_hidden_layers=28, hidden_size=3072, intermediate_size=8192, num_attention_heads=24,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "Llama-2-7B": dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
    "Llama-3.1-8B": dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    "Mistral-7B-v0.1": dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                            num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False),
    # Qwen2: a 152k vocabulary, few key-value heads (6-7 query heads share each), biases on q, k and v
    "Qwen2-0.5B": dict(num_hidden_layers=24, hidden_size=896, intermediate_size=4864, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "Qwen2-1.5B": dict(num_hidden_layers=28, hidden_size=1536, intermediate_size=8960, num_attention_heads=12,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "Qwen2-7B": dict(num_hidden_layers=28, hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}
RECIPES = ("bf16 + bnb AdamW 32-bit", "peft QLoRA", "torch AdamW", "fp32 + bf16 autocast")
# the rows name recipe and optimizer as peftlab.tools.memory does: its "16-bit" recipe with either optimizer
MEMORY_RECIPE = {"bf16 + bnb AdamW 32-bit": "16-bit", "torch AdamW": "16-bit"}
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
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
    if method == "QLoRA":  # what BitsAndBytesConfig(load_in_4bit, nf4, double quant, bf16 compute) builds
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
    if method in ("LoRA", "QLoRA"):
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


METHODS = {RECIPES[0]: ("full fine-tuning", "LoRA", "QLoRA"), "peft QLoRA": ("QLoRA",),
           "torch AdamW": ("full fine-tuning", "LoRA"), "fp32 + bf16 autocast": ("full fine-tuning", "LoRA")}


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

    import bitsandbytes
    import peft
    import transformers

    stored = json.load(open(args.out)) if args.append else {}
    rows = stored.get("rows", [])
    environment = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "transformers": transformers.__version__, "peft": peft.__version__,
                   "bitsandbytes": bitsandbytes.__version__, "python": platform.python_version()}
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
                if method == "full fine-tuning" and args.recipe == RECIPES[0] and not ckpt:
                    variants.append((args.batches[0], args.seqs[0], "AdamW 8-bit"))
                for batch, seq, optimizer in variants:
                    row = {"model": size, **SHAPES[size], "recipe": MEMORY_RECIPE.get(args.recipe, args.recipe),
                           "method": method, "seq": seq,
                           "batch": batch, "gradient_checkpointing": ckpt, "optimizer": optimizer,
                           "lora_r": LORA_R if method != "full fine-tuning" else None,
                           "lora_targets": LINEAR if method != "full fine-tuning" else None}
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
