"""Measure peak GPU memory of training steps, for checking ``peftlab.tools.memory`` against reality.

    python benchmarks/gpu_memory.py --out data/results/gpu_memory.json [--sizes Llama-3.2-1B ...]

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
}
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R = 16


def build(size: str, method: str):
    import bitsandbytes as bnb
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[size], max_position_embeddings=8192, use_cache=False)
    config._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = LlamaForCausalLM._from_config(config, torch_dtype=torch.bfloat16)
    if method == "QLoRA":  # what BitsAndBytesConfig(load_in_4bit, nf4, double quant, bf16 compute) builds
        for layer in model.model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for name, child in list(parent.named_children()):
                    if isinstance(child, torch.nn.Linear):
                        q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=False,
                                              compute_dtype=torch.bfloat16, compress_statistics=True,
                                              quant_type="nf4", device="meta")
                        q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                                     quant_type="nf4").to("cuda")
                        setattr(parent, name, q)
                        del child
        gc.collect()
        torch.cuda.empty_cache()
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


def measure(model, seq: int, batch: int, optimizer_name: str, steps: int = 2) -> dict:
    import bitsandbytes as bnb

    params = [p for p in model.parameters() if p.requires_grad]
    make = {"AdamW 32-bit": lambda: bnb.optim.AdamW(params, lr=1e-5, optim_bits=32),
            "AdamW 8-bit": lambda: bnb.optim.AdamW8bit(params, lr=1e-5)}[optimizer_name]
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", nargs="+", default=["Llama-3.2-1B", "Llama-3.2-3B", "Llama-3.1-8B"])
    parser.add_argument("--methods", nargs="+", default=["full fine-tuning", "LoRA", "QLoRA"])
    parser.add_argument("--seqs", nargs="+", type=int, default=[512, 2048])
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()

    import bitsandbytes
    import peft
    import transformers

    rows = []
    environment = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "transformers": transformers.__version__, "peft": peft.__version__,
                   "bitsandbytes": bitsandbytes.__version__, "python": platform.python_version()}
    for size in args.sizes:
        for method in args.methods:
            model = build(size, method)
            variants = [(seq, ckpt, "AdamW 32-bit") for seq in args.seqs for ckpt in (False, True)]
            if method == "full fine-tuning":
                variants.append((args.seqs[0], False, "AdamW 8-bit"))
            for seq, ckpt, optimizer_name in variants:
                set_checkpointing(model, ckpt)
                row = {"model": size, **SHAPES[size], "method": method, "seq": seq, "batch": args.batch,
                       "gradient_checkpointing": ckpt, "optimizer": optimizer_name,
                       "lora_r": LORA_R if method != "full fine-tuning" else None,
                       "lora_targets": LINEAR if method != "full fine-tuning" else None}
                row.update(measure(model, seq, args.batch, optimizer_name))
                rows.append(row)
                print(f"{size:13s} {method:17s} seq {seq:5d} ckpt {str(ckpt):5s} {optimizer_name:12s} "
                      f"static {row['static_bytes'] / 2**30:7.2f} GiB  peak {row['peak_bytes'] / 2**30:7.2f} GiB",
                      flush=True)
                with open(args.out, "w") as f:  # rewritten after every row: a timeout keeps what was measured
                    json.dump({"environment": environment, "recipe": __doc__.split("\n\n")[2], "rows": rows}, f,
                              indent=1)
            del model
            gc.collect()
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
