"""Training-step time and peak memory of the scratch methods against the production libraries, on a GPU.

    python benchmarks/gpu_speed.py [--size Llama-3.2-1B] [--seq 1024] [--batch 4] [--rounds 5]

A Llama shape with random weights (the values do not change speed or memory), bf16, LoRA r = 16 (alpha 32)
on every linear layer of the decoder, AdamW (torch, fp32 states for fp32 adapters, bf16 for bf16 ones), random
token ids as inputs and labels. The variants, all built first and then timed side by side in one process:

- ``peft LoRA``: ``peft.get_peft_model`` on the bf16 model;
- ``scratch LoRA``: ``peftlab.methods.lora.add_lora``;
- ``bnb + peft QLoRA``: bitsandbytes' ``Linear4bit`` (NF4, double quantization, bf16 compute) under peft's LoRA,
  what ``BitsAndBytesConfig(load_in_4bit=True, ...)`` builds;
- ``scratch QLoRA``: ``peftlab.methods.qlora.add_qlora``, quantized on the GPU, dequantized in plain (eager)
  PyTorch in the forward pass and again in the backward pass (``nf4._NF4MatMul``).

(``torch.compile`` of the dequantization was tried on the H200 and made the step slower, 1.18-1.39x bnb + peft
against 1.08-1.15x eager: the step's time is in the matrix products, not in unpacking the weights.)

Step time: the median over ``--rounds`` rounds, each round timing ``--steps`` steps of every variant in turn
(so that clocks and temperature drift hit all alike). Peak memory: each variant's own, measured over two steps
as ``max_memory_allocated`` minus what the other variants held, plus its own weights. It prints each variant's
time and peak, and the ratios the project tracks: scratch LoRA / peft LoRA, scratch QLoRA / (bnb + peft).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import torch

from gpu_memory import SHAPES, LINEAR, LORA_R, build

from peftlab.course.measure import describe_machine
from peftlab.methods.names import LORA, QLORA


def scratch(size: str, method: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftlab.methods import lora, qlora

    config = LlamaConfig(**SHAPES[size], max_position_embeddings=8192, use_cache=False)
    config._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = LlamaForCausalLM._from_config(config, torch_dtype=torch.bfloat16)
    lora_config = lora.LoraConfig(r=LORA_R, alpha=2 * LORA_R, target_modules=tuple(LINEAR))
    if method == QLORA:
        qlora.add_qlora(model, lora_config)
    else:
        lora.add_lora(model, lora_config)
    return model


def tensor_bytes(model) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


class Runner:
    def __init__(self, model, seq: int, batch: int):
        self.model = model.train()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-5)
        self.ids = torch.randint(0, model.config.vocab_size, (batch, seq), device="cuda")

    def step(self):
        loss = self.model(input_ids=self.ids, labels=self.ids).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="Llama-3.2-1B", choices=list(SHAPES))
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--variants", nargs="*")
    parser.add_argument("--out")
    args = parser.parse_args()
    builders = {"peft LoRA": lambda: build(args.size, LORA),
                "scratch LoRA": lambda: scratch(args.size, LORA),
                "bnb + peft QLoRA": lambda: build(args.size, QLORA),
                "scratch QLoRA": lambda: scratch(args.size, QLORA)}
    names = args.variants or list(builders)
    peaks, runners = {}, {}
    for name in names:  # peak memory, one variant at a time, the others already built held aside
        gc.collect()
        torch.cuda.empty_cache()
        model = builders[name]()
        own = tensor_bytes(model)
        runner = Runner(model, args.seq, args.batch)
        torch.cuda.synchronize()
        held = torch.cuda.memory_allocated() - own
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):  # the first step also creates the optimizer states
            runner.step()
        torch.cuda.synchronize()
        peaks[name] = torch.cuda.max_memory_allocated() - held
        runners[name] = runner
        print(f"built {name}: peak {peaks[name] / 2**30:.2f} GiB (weights and buffers {own / 2**30:.2f} GiB)", flush=True)
    times = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            runners[name].step()  # one untimed step after switching models
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                runners[name].step()
            torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / args.steps)
    step = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{args.size}, bf16, seq {args.seq} x batch {args.batch}, LoRA r={LORA_R} on {', '.join(LINEAR)}; "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for name in names:
        print(f"{name:26s} step {1000 * step[name]:7.1f} ms (rounds {min(times[name]) * 1000:.1f}-"
              f"{max(times[name]) * 1000:.1f})   peak {peaks[name] / 2**30:6.2f} GiB")
    ratios = {}
    for mine, theirs in (("scratch LoRA", "peft LoRA"), ("scratch QLoRA", "bnb + peft QLoRA")):
        if mine in step and theirs in step:
            ratios[f"{mine} / {theirs}"] = {"step time": step[mine] / step[theirs], "peak memory": peaks[mine] / peaks[theirs]}
            print(f"{mine} / {theirs}: step time {ratios[f'{mine} / {theirs}']['step time']:.2f}x, "
                  f"peak memory {ratios[f'{mine} / {theirs}']['peak memory']:.2f}x")
    if args.out:
        json.dump({"command": "python benchmarks/gpu_speed.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()
                                                                        if v is not None and k != "out"),
                   "device": torch.cuda.get_device_name(), "machine": describe_machine("cuda"),
                   "size": args.size, "seq": args.seq, "batch": args.batch, "step_seconds": step, "rounds": times,
                   "peak_bytes": peaks, "ratios": ratios}, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
