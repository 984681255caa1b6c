"""Scratch LoRA (peftlab.methods.lora) against huggingface peft: same weights, same outputs, same files."""

import copy
import json
import re

import peft
import pytest
import torch

from peftlab import ALL_LINEAR, course_seed
from peftlab.core.inject import InjectionError
from peftlab.methods import lora
from peftlab.production import add_lora_peft, apply_lora, copy_lora_weights, lora_weights

CONFIGS = [
    lora.LoraConfig(r=4, alpha=8, target_modules=("q_proj", "v_proj")),
    lora.LoraConfig(r=8, alpha=16, target_modules=ALL_LINEAR),
    lora.LoraConfig(r=16, alpha=8, target_modules=ALL_LINEAR, use_rslora=True),
]


def pair(make_tiny, config, randomize_lora_B):
    """A scratch and a peft model from the same random base, with the same LoRA weights."""
    base = make_tiny()
    scratch = copy.deepcopy(base)
    lora.add_lora(scratch, config)
    randomize_lora_B(scratch)
    production = add_lora_peft(copy.deepcopy(base), config)
    copy_lora_weights(scratch, production)
    return base, scratch, production


@pytest.mark.parametrize("config", CONFIGS, ids=["qv-r4", "all-r8", "all-r16-rslora"])
def test_same_weights_same_logits(make_tiny, tokens, config, randomize_lora_B):
    _, scratch, production = pair(make_tiny, config, randomize_lora_B)
    with torch.no_grad():
        torch.testing.assert_close(scratch(tokens).logits, production(tokens).logits, atol=1e-5, rtol=0)
    # and the test is not trivial: the LoRA path changes the output
    with torch.no_grad(), lora.disable_lora(scratch):
        assert (scratch(tokens).logits - production(tokens).logits).abs().max() > 1e-3


def test_same_parameter_count(make_tiny, randomize_lora_B):
    config = CONFIGS[1]
    _, scratch, production = pair(make_tiny, config, randomize_lora_B)
    trainable, total = production.get_nb_trainable_parameters()
    assert lora.count_parameters(scratch)["trainable"] == trainable
    assert lora.count_parameters(scratch)["total"] == total


def test_scratch_saved_adapter_loads_in_peft(make_tiny, tokens, tmp_path, randomize_lora_B):
    base, scratch, _ = pair(make_tiny, CONFIGS[1], randomize_lora_B)
    lora.save_lora(scratch, tmp_path / "adapter")
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens).logits, scratch(tokens).logits, atol=1e-5, rtol=0)


def test_peft_saved_adapter_loads_in_scratch(make_tiny, tokens, tmp_path, randomize_lora_B):
    base, _, production = pair(make_tiny, CONFIGS[2], randomize_lora_B)
    production.save_pretrained(tmp_path / "adapter")
    fresh = copy.deepcopy(base)
    lora.load_lora(fresh, tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(fresh(tokens).logits, production(tokens).logits, atol=1e-5, rtol=0)


@pytest.mark.seeded
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_training_steps_follow_the_same_loss(make_tiny, dropout, randomize_lora_B):
    """Five AdamW steps from the same weights and seed: the same losses, the same LoRA weights."""
    config = lora.LoraConfig(r=4, alpha=8, dropout=dropout, target_modules=ALL_LINEAR)
    _, scratch, production = pair(make_tiny, config, randomize_lora_B)
    g = torch.Generator().manual_seed(3 + course_seed())
    batches = [torch.randint(0, 257, (4, 12), generator=g)] * 5  # one batch, so the loss must fall

    def run(model):
        torch.manual_seed(course_seed())  # same dropout masks
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model.train()
        losses = []
        for x in batches:
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        return losses

    scratch_losses, peft_losses = run(scratch), run(production)
    assert scratch_losses == pytest.approx(peft_losses, abs=1e-5)
    assert scratch_losses[-1] < scratch_losses[0] - 0.01  # it did learn
    a, b = lora_weights(scratch), lora_weights(production)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


def test_apply_lora_switch(make_tiny, tokens):
    config = CONFIGS[0]
    models = {backend: apply_lora(make_tiny(), config, backend=backend) for backend in ("scratch", "peft")}
    assert isinstance(models["peft"], peft.PeftModel)
    assert lora.count_parameters(models["scratch"])["trainable"] == lora.count_parameters(models["peft"])["trainable"]
    with pytest.raises(ValueError, match="unknown backend"):
        apply_lora(make_tiny(), config, backend="loralib")


def test_peft_backend_refuses_misspelt_target(make_tiny):
    with pytest.raises(ValueError, match="q_proj"):
        add_lora_peft(make_tiny(), lora.LoraConfig(target_modules=("q_prj",)))


def test_a_regex_target_selects_the_same_layers_in_both_and_saved_files_load_both_ways(make_tiny, tokens, tmp_path,
                                                                                      randomize_lora_B):
    """peft reads a target_modules string as a regular expression over whole module paths, which can pick layers;
    scratch LoRA takes the same as a compiled pattern (loading it used to widen it to every layer's q_proj)."""
    config = lora.LoraConfig(r=4, alpha=8, target_modules=re.compile(r".*layers\.0\..*(q_proj|v_proj)"))
    base, scratch, production = pair(make_tiny, config, randomize_lora_B)
    assert [path for path, _ in lora.lora_layers(scratch)] == ["model.layers.0.self_attn.q_proj",
                                                               "model.layers.0.self_attn.v_proj"]
    production.save_pretrained(tmp_path / "peft")
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["target_modules"] == config.target_modules[0].pattern
    fresh = copy.deepcopy(base)
    lora.load_lora(fresh, tmp_path / "peft")
    assert [path for path, _ in lora.lora_layers(fresh)] == [path for path, _ in lora.lora_layers(scratch)]
    lora.save_lora(scratch, tmp_path / "scratch")
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "scratch")
    with torch.no_grad():
        torch.testing.assert_close(fresh(tokens).logits, production(tokens).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(loaded(tokens).logits, scratch(tokens).logits, atol=1e-5, rtol=0)


def test_a_pattern_that_matches_nothing_or_mixed_with_names_is_refused(make_tiny):
    with pytest.raises(ValueError, match="not both"):
        lora.LoraConfig(target_modules=(re.compile(r".*q_proj"), "v_proj"))
    with pytest.raises(InjectionError, match=r"target pattern '\.\*layers\\\\\.99\\\\\..\*' matches no module path"):
        lora.add_lora(make_tiny(), lora.LoraConfig(target_modules=re.compile(r".*layers\.99\..*")))
