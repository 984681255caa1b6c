"""LoRA benchmark on the bundled model: ratios measured side by side, in one run.

    make bench            (or: python benchmarks/lora_bench.py [--repeats N])

Prints
- training-step time of scratch LoRA relative to peft LoRA (goal: <= 1.10),
- inference latency of merged LoRA relative to the base model (goal: 1.00 +- 0.03),
- inference latency of unmerged LoRA relative to the base model (the overhead merging removes).
Variants are timed in turns (peftlab.course.measure), so machine drift affects all alike. Only the
ratios are comparable across machines; milliseconds are printed for context.
"""

import argparse
import copy
import platform

import torch

import peftlab
from peftlab import ALL_LINEAR, LoraConfig, load_base, load_task
from peftlab.course.measure import forward_latency, interleaved_medians, training_step
from peftlab.course.train import collate
from peftlab.production import apply_lora, copy_lora_weights


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    base, tokenizer = load_base()
    rows = load_task("addition", "train")[:32]
    train_batch = collate(tokenizer, rows)
    infer_batch = collate(tokenizer, load_task("addition", "validation")[:64])["input_ids"]
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"batch: training 32 x {train_batch['input_ids'].shape[1]} tokens, inference 64 x {infer_batch.shape[1]} tokens;"
          f" {args.repeats} interleaved repeats, medians\n")

    results = []
    for label, targets in [("q,v", ("q_proj", "v_proj")), ("all linear", ALL_LINEAR)]:
        config = LoraConfig(r=8, alpha=16, target_modules=targets)
        scratch = apply_lora(copy.deepcopy(base), config, backend="scratch")
        production = apply_lora(copy.deepcopy(base), config, backend="peft")
        copy_lora_weights(scratch, production)
        step = interleaved_medians({"scratch": training_step(scratch, train_batch),
                                    "peft": training_step(production, train_batch)}, repeats=args.repeats)
        scratch.eval()
        merged = peftlab.merge_and_unload(copy.deepcopy(scratch))
        # a second copy of the base model measures the noise floor: two identical models
        latency = forward_latency({"base": base, "base copy": copy.deepcopy(base), "unmerged": scratch,
                                   "merged": merged}, infer_batch, repeats=args.repeats)
        results.append((label, step, latency))

    print(f"{'LoRA r=8 on':12s} {'train step scratch/peft':>24s} {'merged/base':>12s} {'unmerged/base':>14s}"
          f" {'noise: copy/base':>17s}   (ms: step scratch, peft; forward base, unmerged, merged)")
    for label, step, lat in results:
        print(f"{label:12s} {step['scratch'] / step['peft']:24.3f} {lat['merged'] / lat['base']:12.3f} "
              f"{lat['unmerged'] / lat['base']:14.3f} {lat['base copy'] / lat['base']:17.3f}"
              f"   ({step['scratch'] * 1e3:.1f}, {step['peft'] * 1e3:.1f}; "
              f"{lat['base'] * 1e3:.2f}, {lat['unmerged'] * 1e3:.2f}, {lat['merged'] * 1e3:.2f})")
    print()
    for label, step, lat in results:
        ratio, merged = step["scratch"] / step["peft"], lat["merged"] / lat["base"]
        print(f"{label:12s} goal scratch/peft step <= 1.10: {'met' if ratio <= 1.10 else 'MISSED'};"
              f"  goal merged/base = 1.00 +- 0.03: {'met' if abs(merged - 1) <= 0.03 else 'MISSED'}")


if __name__ == "__main__":
    main()
