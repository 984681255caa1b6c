"""Hybrids built from the scratch methods: they train, and match AdapterHub where it has the same union."""

import copy

import pytest
import torch

from peftlab import ALL_LINEAR, course_seed, load_base, load_task
from peftlab.core.inject import count_parameters
from peftlab.course.train import TrainConfig, collate, train
from peftlab.methods import hybrid
from peftlab.methods.bottleneck import AdapterConfig
from peftlab.methods.lora import LoraConfig
from peftlab.methods.prompt import PromptTuningConfig
from peftlab.production import (add_adapter_adapterhub, add_adapter_and_lora_adapterhub, copy_adapter_weights,
                                copy_hybrid_weights_to_adapterhub, load_base_4bit)


def randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.1)


def logits(model, tokens):
    with torch.no_grad():
        return model(input_ids=tokens).logits


def test_adapter_plus_lora_equals_adapterhub_config_union(make_tiny, tokens):
    base = make_tiny()
    adapter, lora_config = AdapterConfig(placement="pfeiffer", reduction_factor=4), LoraConfig(r=4, alpha=8)
    scratch = copy.deepcopy(base)
    report = hybrid.add_adapter_and_lora(scratch, "task", adapter, lora_config)
    randomize(scratch)
    hub = add_adapter_and_lora_adapterhub(copy.deepcopy(base), "task", adapter, lora_config)
    copy_hybrid_weights_to_adapterhub(scratch, hub, "task")
    assert report["trainable"] == sum(p.numel() for p in hub.parameters() if p.requires_grad)
    torch.testing.assert_close(logits(scratch, tokens), logits(hub, tokens), atol=1e-5, rtol=0)


def test_adapter_on_a_4bit_base_matches_adapterhub_on_bitsandbytes():
    """Same NF4 base (without double quantization, where the bytes are identical) and same adapter."""
    scratch, tokenizer = load_base()
    hybrid.add_qlora_base_and_adapter(scratch, "task", AdapterConfig(), double_quant=False)
    randomize(scratch)
    hub, _ = load_base_4bit(double_quant=False)
    add_adapter_adapterhub(hub, "task", AdapterConfig())
    copy_adapter_weights(scratch, hub, "task")
    batch = collate(tokenizer, load_task("reverse", "validation")[:8])
    with torch.no_grad():
        ours = scratch(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        theirs = hub(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.seeded
@pytest.mark.parametrize("kind", ["prompt+lora", "adapter+lora", "qlora+adapter"])
def test_each_hybrid_trains_both_parts_and_nothing_else(kind):
    torch.manual_seed(course_seed())
    model, tokenizer = load_base()
    if kind == "prompt+lora":
        hybrid.add_prompt_and_lora(model, PromptTuningConfig(num_virtual_tokens=8), LoraConfig(target_modules=ALL_LINEAR),
                                   tokenizer=tokenizer)
        parts = ("embed_tokens.prompt", "lora_")
    elif kind == "adapter+lora":
        hybrid.add_adapter_and_lora(model, "task", AdapterConfig(placement="pfeiffer"), LoraConfig(target_modules=ALL_LINEAR))
        parts = (".adapters.task.", "lora_")
    else:
        hybrid.add_qlora_base_and_adapter(model, "task", AdapterConfig())
        parts = (".adapters.task.",)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = train(model, tokenizer, load_task("addition"), TrainConfig(steps=60, seed=course_seed(), progress=False))
    assert losses[-1] < losses[0] - 2
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    for part in parts:
        assert any(part in n for n in changed), f"{part} did not train"
    assert all(any(part in n for part in parts) for n in changed)
    assert count_parameters(model)["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
