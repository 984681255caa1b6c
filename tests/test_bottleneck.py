"""Scratch bottleneck adapters against AdapterHub `adapters`, and the multi-adapter workflow."""

import copy

import pytest
import torch


from peftlab.core.inject import InjectionError
from peftlab.methods import bottleneck as bn
from peftlab.production import add_adapter_adapterhub, copy_adapter_weights


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


def randomize(model, name, seed=0):
    g = torch.Generator().manual_seed(seed)
    for n, p in model.named_parameters():
        if f".adapters.{name}." in n:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_same_weights_same_logits_as_adapterhub(make_tiny, tokens, placement):
    base = make_tiny()
    config = bn.AdapterConfig(placement=placement, reduction_factor=4)
    scratch = copy.deepcopy(base)
    bn.add_adapter(scratch, "task", config)
    randomize(scratch, "task")
    hub = add_adapter_adapterhub(copy.deepcopy(base), "task", config)
    copy_adapter_weights(scratch, hub, "task")
    assert bn.count_parameters(scratch)["trainable"] == sum(p.numel() for p in hub.parameters() if p.requires_grad)
    torch.testing.assert_close(logits(scratch, tokens), logits(hub, tokens), atol=1e-5, rtol=0)
    assert not torch.allclose(logits(scratch, tokens), logits(base, tokens), atol=1e-3)  # the adapters do act


def test_identity_init_and_disabled_equal_base(make_tiny, tokens):
    base = make_tiny()
    model = copy.deepcopy(base)
    bn.add_adapter(model, "a", bn.AdapterConfig(init="identity"))
    torch.testing.assert_close(logits(model, tokens), logits(base, tokens), atol=0, rtol=0)
    randomize(model, "a")
    with bn.disable_adapters(model):
        torch.testing.assert_close(logits(model, tokens), logits(base, tokens), atol=0, rtol=0)
    assert bn.active_adapter(model) == "a"


def test_bert_init_is_near_identity(make_tiny, tokens):
    base = make_tiny()
    model = copy.deepcopy(base)
    bn.add_adapter(model, "a")
    assert (logits(model, tokens) - logits(base, tokens)).abs().max() < 0.05


def test_several_adapters_switch_and_delete(make_tiny, tokens):
    base = make_tiny()
    model = copy.deepcopy(base)
    bn.add_adapter(model, "first", bn.AdapterConfig(placement="houlsby"))
    randomize(model, "first", seed=1)
    out_first = logits(model, tokens)
    bn.add_adapter(model, "second", bn.AdapterConfig(placement="pfeiffer"))
    randomize(model, "second", seed=2)
    assert bn.adapter_names(model) == ["first", "second"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters.second." in n for n in trainable)
    out_second = logits(model, tokens)
    bn.set_active_adapter(model, "first")
    torch.testing.assert_close(logits(model, tokens), out_first, atol=0, rtol=0)
    bn.set_active_adapter(model, None)
    torch.testing.assert_close(logits(model, tokens), logits(base, tokens), atol=0, rtol=0)
    bn.delete_adapter(model, "first")
    bn.set_active_adapter(model, "second")
    torch.testing.assert_close(logits(model, tokens), out_second, atol=0, rtol=0)
    bn.delete_adapter(model, "second")
    assert not any(isinstance(m, bn.AdapterSlot) for m in model.modules())
    torch.testing.assert_close(logits(model, tokens), logits(base, tokens), atol=0, rtol=0)


def test_only_the_active_adapter_trains(make_tiny, changed_by_training):
    model = make_tiny()
    bn.add_adapter(model, "a")
    bn.add_adapter(model, "b")
    changed = changed_by_training(model)
    assert changed and all(".adapters.b." in n for n in changed)


def test_save_load_round_trip(make_tiny, tokens, tmp_path):
    base = make_tiny()
    model = copy.deepcopy(base)
    bn.add_adapter(model, "task", bn.AdapterConfig(placement="pfeiffer", reduction_factor=8))
    randomize(model, "task")
    bn.save_adapter(model, "task", tmp_path)
    fresh = copy.deepcopy(base)
    bn.load_adapter(fresh, tmp_path)
    torch.testing.assert_close(logits(fresh, tokens), logits(model, tokens), atol=0, rtol=0)


def test_bad_input(make_tiny, tmp_path):
    for factor in (0, -2):
        with pytest.raises(ValueError, match="positive"):
            bn.AdapterConfig(reduction_factor=factor)
    with pytest.raises(ValueError, match=r"bottleneck width 0 .* between 1 and the hidden size 32"):
        bn.add_adapter(make_tiny(), "a", bn.AdapterConfig(reduction_factor=64))
    with pytest.raises(ValueError, match=r"bottleneck width 64 .* between 1 and the hidden size 32"):
        bn.add_adapter(make_tiny(), "a", bn.AdapterConfig(reduction_factor=0.5))
    with pytest.raises(ValueError, match="houlsby.*pfeiffer"):
        bn.AdapterConfig(placement="parallel")
    model = make_tiny()
    bn.add_adapter(model, "a")
    with pytest.raises(InjectionError, match="already has an adapter named 'a'"):
        bn.add_adapter(model, "a")
    with pytest.raises(KeyError, match="no adapter named 'b'"):
        bn.set_active_adapter(model, "b")
    bn.save_adapter(model, "a", tmp_path)
    from transformers import LlamaConfig, LlamaForCausalLM
    other = LlamaForCausalLM(LlamaConfig(vocab_size=257, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(ValueError, match=r"o_proj\.down\.weight in .* has shape \(2, 32\) .* \(4, 64\)"):
        bn.load_adapter(other, tmp_path)


def test_a_missing_attribute_names_the_slot_and_the_layer_it_wraps(make_tiny):
    model = make_tiny()
    bn.add_adapter(model, "task", bn.AdapterConfig("houlsby"))
    slot = next(m for m in model.modules() if type(m).__name__ == "AdapterSlot")
    with pytest.raises(AttributeError, match=r"AdapterSlot \(around a \w+\) has no attribute 'nonexistent'"):
        slot.nonexistent  # noqa: B018 -- the attribute access is what is tested
