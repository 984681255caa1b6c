"""Every method of the course on the bundled model, measured side by side in one run.

    make bench-methods      (or: python benchmarks/methods_bench.py [--repeats N])

Prints, per method: trainable parameters; training-step time relative to LoRA (r=8 on q,v);
inference latency relative to the base model, unmerged and, where the method allows it,
merged/folded; the scratch/production training-step ratio (goal <= 1.10); then soft-prompt
length vs latency, and the scratch NF4 quantize/dequantize time relative to bitsandbytes' CPU
kernels. Timings are medians of interleaved repeats (peftlab.course.measure); only ratios compare
across machines.
"""

import argparse
import copy
import platform

import torch

import peftlab
from peftlab import ALL_LINEAR, load_base, load_task
from peftlab.course.measure import forward_latency, interleaved_medians, training_step
from peftlab.course.tasks import load_stories
from peftlab.course.train import collate
from peftlab.methods import bottleneck, hybrid, ia3, lora, nf4, prompt, qlora
from peftlab.production import (add_adapter_adapterhub, add_adapter_and_lora_adapterhub, add_ia3_peft, add_lora_peft,
                                add_prompt_peft, load_base_4bit)


def build(base):
    """name -> (scratch model, production model or None, merged/folded scratch model or None)."""
    def fresh():
        return copy.deepcopy(base)

    torch.manual_seed(0)
    qv, all_linear = lora.LoraConfig(target_modules=("q_proj", "v_proj")), lora.LoraConfig(target_modules=ALL_LINEAR)
    models = {}
    for name, config in [("LoRA r=8 q,v", qv), ("LoRA r=8 all linear", all_linear)]:
        m = fresh()
        lora.add_lora(m, config)
        models[name] = (m, add_lora_peft(fresh(), config), lora.merge_and_unload(copy.deepcopy(m)))
    m = fresh()
    ia3.add_ia3(m)
    models["IA3"] = (m, add_ia3_peft(fresh()), ia3.fold_ia3(copy.deepcopy(m)))
    for placement in ("houlsby", "pfeiffer"):
        config = bottleneck.AdapterConfig(placement=placement)
        m = fresh()
        bottleneck.add_adapter(m, "task", config)
        models[f"adapter {placement}"] = (m, add_adapter_adapterhub(fresh(), "task", config), None)
    m = fresh()
    prompt.add_prompt(m, prompt.PromptTuningConfig(16, init="random"))
    models["prompt tuning 16"] = (m, add_prompt_peft(fresh(), prompt.PromptTuningConfig(16)), None)
    m = fresh()
    qlora.add_qlora(m, all_linear)
    # merged into the 4-bit base: dequantize, add, requantize (lossy; see tests/test_qlora.py)
    models["QLoRA all linear"] = (m, add_lora_peft(load_base_4bit()[0], all_linear),
                                  lora.merge_and_unload(copy.deepcopy(m)))
    m = fresh()
    hybrid.add_adapter_and_lora(m, "task", bottleneck.AdapterConfig("pfeiffer"), qv)
    models["adapter+LoRA"] = (m, add_adapter_and_lora_adapterhub(fresh(), "task", bottleneck.AdapterConfig("pfeiffer"), qv),
                              None)
    m = fresh()
    hybrid.add_prompt_and_lora(m, prompt.PromptTuningConfig(16, init="random"), qv)
    models["prompt+LoRA"] = (m, None, None)
    m = fresh()
    hybrid.add_qlora_base_and_adapter(m, "task", bottleneck.AdapterConfig())
    models["NF4 base+adapter"] = (m, None, None)
    return models


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    base, tokenizer = load_base()
    train_batch = collate(tokenizer, load_task("addition", "train")[:32])
    infer_ids = collate(tokenizer, load_task("addition", "validation")[:64])["input_ids"]
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"{args.repeats} interleaved repeats, medians")
    print(f"training batch 32 x {train_batch['input_ids'].shape[1]} tokens, inference batch 64 x {infer_ids.shape[1]}\n")
    models = build(base)

    steps = interleaved_medians({name: training_step(m, train_batch) for name, (m, _, _) in models.items()},
                                repeats=args.repeats)
    pairs = {}
    for name, (m, prod, _) in models.items():
        if prod is not None:
            pairs[name] = interleaved_medians({"scratch": training_step(m, train_batch),
                                               "production": training_step(prod, train_batch)}, repeats=args.repeats)
    variants = {"base": base, "base copy": copy.deepcopy(base)}  # the copy measures the noise floor
    for name, (m, _, merged) in models.items():
        variants[name] = m
        if merged is not None:
            variants[name + " (merged)"] = merged
    latency = forward_latency(variants, infer_ids, repeats=args.repeats)

    ref = steps["LoRA r=8 q,v"]
    print(f"{'method':22s} {'trainable':>10s} {'step/LoRA':>10s} {'latency/base':>13s} {'merged/base':>12s} "
          f"{'scratch/prod step':>18s}")
    for name, (m, _, merged) in models.items():
        trainable = peftlab.count_parameters(m)["trainable"]
        merged_ratio = f"{latency[name + ' (merged)'] / latency['base']:.3f}" if merged is not None else "-"
        pair = f"{pairs[name]['scratch'] / pairs[name]['production']:.3f}" if name in pairs else "-"
        print(f"{name:22s} {trainable:>10,} {steps[name] / ref:>10.3f} {latency[name] / latency['base']:>13.3f} "
              f"{merged_ratio:>12s} {pair:>18s}")
    print(f"{'(noise floor: an identical copy of the base)':48s} {latency['base copy'] / latency['base']:>13.3f}")
    missed = [n for n, p in pairs.items() if p["scratch"] / p["production"] > 1.10]
    print(f"\ngoal scratch/production step <= 1.10: {'met for all' if not missed else 'MISSED for ' + ', '.join(missed)}")

    print("\nsoft-prompt length vs inference latency (relative to the base model on the same batch):")
    lengths = {}
    for n in (8, 16, 32, 64, 128):
        m = copy.deepcopy(base)
        prompt.add_prompt(m, prompt.PromptTuningConfig(n, init="random"))
        lengths[f"{n}"] = m
    stories = [tokenizer(s).input_ids[:64] for s in load_stories() if len(tokenizer(s).input_ids) >= 64]
    long_ids = torch.tensor(stories[:16])
    for label, ids in [(f"task prompts, 64 x {infer_ids.shape[1]} tokens", infer_ids),
                       (f"stories, {long_ids.shape[0]} x {long_ids.shape[1]} tokens", long_ids)]:
        prompt_latency = forward_latency({"base": base, **lengths}, ids, repeats=args.repeats)
        print(f"  {label:30s} " + "  ".join(f"{n}: {prompt_latency[n] / prompt_latency['base']:.2f}x" for n in lengths))

    import bitsandbytes.functional as bnbf
    w = torch.randn(2048, 2048) * 0.02
    q_ours, (packed, state) = nf4.quantize_nf4(w, double_quant=True), bnbf.quantize_4bit(w, quant_type="nf4",
                                                                                             compress_statistics=True)
    nf4_times = interleaved_medians({
        "quantize scratch": lambda: nf4.quantize_nf4(w, double_quant=True),
        "quantize bnb": lambda: bnbf.quantize_4bit(w, quant_type="nf4", compress_statistics=True),
        "dequantize scratch": lambda: nf4.dequantize_nf4(q_ours),
        "dequantize bnb": lambda: bnbf.dequantize_4bit(packed, state),
    }, repeats=max(5, args.repeats // 2))
    print("\nNF4 on a 2048x2048 fp32 weight, double quantization (scratch / bitsandbytes CPU):")
    for op in ("quantize", "dequantize"):
        a, b = nf4_times[f"{op} scratch"], nf4_times[f"{op} bnb"]
        print(f"  {op:10s} {a / b:6.2f}x   ({a * 1e3:.1f} ms vs {b * 1e3:.1f} ms)")
    print(f"  bits per parameter: {nf4.quantize_nf4(w).bits_per_parameter():.3f} without, "
          f"{q_ours.bits_per_parameter():.3f} with double quantization")


if __name__ == "__main__":
    main()
