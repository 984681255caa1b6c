"""Scratch QLoRA (NF4 base + LoRA) against transformers + bitsandbytes + peft on the bundled model."""

from pathlib import Path

import pytest
import torch

from peftlab import ALL_LINEAR, LoraConfig, course_seed, load_base, load_task
from peftlab.core.inject import InjectionError
from peftlab.course.train import TrainConfig, collate, evaluate, train
from peftlab.methods.lora import lora_layers, merge_lora, unmerge_lora
from peftlab.methods.qlora import add_qlora, quantize_model
from peftlab.production import add_lora_peft, copy_lora_weights, load_base_4bit


@pytest.fixture(scope="module")
def batch():
    _, tokenizer = load_base()
    return collate(tokenizer, load_task("addition", "validation")[:16] + load_task("reverse", "validation")[:16])


def pair(double_quant):
    torch.manual_seed(0)
    scratch, tokenizer = load_base()
    add_qlora(scratch, LoraConfig(target_modules=ALL_LINEAR), double_quant=double_quant)
    g = torch.Generator().manual_seed(1)
    for name, p in scratch.named_parameters():
        if "lora_B" in name:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.05)
    hub, _ = load_base_4bit(double_quant=double_quant)
    production = add_lora_peft(hub, LoraConfig(target_modules=ALL_LINEAR))
    copy_lora_weights(scratch, production)
    return scratch, production, tokenizer


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_without_double_quant_scratch_equals_bitsandbytes(batch):
    """Same NF4 bytes and scales, same LoRA weights: only float summation order can differ."""
    scratch, production, _ = pair(double_quant=False)
    torch.testing.assert_close(logits(scratch, batch), logits(production, batch), atol=1e-4, rtol=0)


def test_with_double_quant_the_gap_is_small_against_quantization_itself(batch):
    """Tolerance, justified: bitsandbytes' 8-bit absmax step differs from the nearest level in about
    0.2% of blocks (tests/test_nf4.py). Its effect on the logits must be tiny next to the effect of
    4-bit quantization itself (fp32 base vs NF4 base), here below 10% of it."""
    scratch, production, _ = pair(double_quant=True)
    full, _ = load_base()
    from peftlab.methods.lora import add_lora
    torch.manual_seed(0)
    add_lora(full, LoraConfig(target_modules=ALL_LINEAR))
    copy_lora_weights(scratch, full)
    gap = (logits(scratch, batch) - logits(production, batch)).abs().max()
    quantization = (logits(full, batch) - logits(production, batch)).abs().max()
    assert gap < 0.1 * quantization, (float(gap), float(quantization))


def _gradient_change_after_eval(model, tokenizer) -> float:
    """|gradient after an evaluation pass| / |gradient before|, same weights and batch (1.0 when all is well)."""
    batch = collate(tokenizer, load_task("addition")[:16])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)

    def norm():
        model.zero_grad()
        model(**batch).loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]).norm().item()

    before = norm()
    evaluate(model, tokenizer, load_task("addition", "validation")[:16])
    return norm() / before


@pytest.mark.seeded
def test_production_qlora_survives_the_cpu_eval_trap():
    """Train, evaluate (a no-grad pass), train again: the loss must still move, the gradients stay right."""
    torch.manual_seed(course_seed())
    hub, tokenizer = load_base_4bit()
    model = add_lora_peft(hub, LoraConfig(target_modules=ALL_LINEAR))
    rows = load_task("addition")
    first = train(model, tokenizer, rows, TrainConfig(steps=30, seed=course_seed(), progress=False))
    evaluate(model, tokenizer, load_task("addition", "validation")[:50])
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    second = train(model, tokenizer, rows, TrainConfig(steps=30, seed=course_seed() + 1, progress=False))
    assert second[-1] < first[0] - 1
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert len(changed) == len(before), "every LoRA tensor still receives updates after evaluation"
    guarded, _ = load_base_4bit()
    assert _gradient_change_after_eval(add_lora_peft(guarded, LoraConfig(target_modules=ALL_LINEAR)), tokenizer) \
        == pytest.approx(1.0, abs=1e-4)


@pytest.mark.skipif(not (Path("/proc/cpuinfo").exists() and "avx512_bf16" in Path("/proc/cpuinfo").read_text()),
                    reason="the trap exists only on CPUs with AVX512-BF16")
def test_the_trap_is_real_without_the_guard():
    """Without the guard, the check above fails on this CPU: the guard is what makes it pass."""
    from transformers import BitsAndBytesConfig

    torch.manual_seed(0)
    plain, tokenizer = load_base(quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
    ratio = _gradient_change_after_eval(add_lora_peft(plain, LoraConfig(target_modules=ALL_LINEAR)), tokenizer)
    assert ratio < 0.5


@pytest.mark.seeded
def test_scratch_qlora_trains_only_lora_and_starts_at_the_quantized_base(batch):
    torch.manual_seed(course_seed())
    quantized, tokenizer = load_base()
    quantize_model(quantized, ALL_LINEAR)
    model, _ = load_base()
    report = add_qlora(model)
    assert report["bits_per_parameter"] < 4.2
    torch.testing.assert_close(logits(model, batch), logits(quantized, batch), atol=0, rtol=0)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    losses = train(model, tokenizer, load_task("addition"), TrainConfig(steps=40, seed=course_seed(), progress=False))
    assert losses[-1] < losses[0] - 1
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers()), "4-bit weights never change"
    assert all(("lora_A" in n or "lora_B" in n) == p.requires_grad for n, p in model.named_parameters())


def test_merging_into_a_4bit_base_rounds(batch):
    """Dequantize, add, requantize: every weight is rounded again, an error of the same order as
    quantizing the base in the first place (measured here as fp32 vs NF4 base, same LoRA)."""
    scratch, _, _ = pair(double_quant=True)
    full, _ = load_base()
    from peftlab.methods.lora import add_lora
    add_lora(full, LoraConfig(target_modules=ALL_LINEAR))
    copy_lora_weights(scratch, full)
    unmerged = logits(scratch, batch)
    quantization = (logits(full, batch) - unmerged).abs().max()
    merge_lora(scratch)
    merged_error = (logits(scratch, batch) - unmerged).abs().max()
    full_unmerged = logits(full, batch)
    merge_lora(full)
    assert (logits(full, batch) - full_unmerged).abs().max() < 1e-3, "a 32-bit base merges almost exactly"
    assert 0.1 * quantization < merged_error < 3 * quantization, (float(merged_error), float(quantization))
    unmerge_lora(scratch)
    assert not any(layer.merged for _, layer in lora_layers(scratch))


def test_quantizing_twice_is_refused():
    model, _ = load_base()
    quantize_model(model, ("q_proj",))
    with pytest.raises(InjectionError, match="already quantized"):
        quantize_model(model, ("q_proj",))
