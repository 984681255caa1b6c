"""Scratch IA3 against peft's IA3, and the invariants: identity at init, disabling, folding, save/load."""

import copy

import peft
import pytest
import torch


from peftlab.core.inject import InjectionError
from peftlab.methods import ia3
from peftlab.production import add_ia3_peft


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


def randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "ia3_l" in name:
            p.data.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))


def scratch_and_peft(make_tiny):
    base = make_tiny()
    scratch = copy.deepcopy(base)
    ia3.add_ia3(scratch)
    randomize(scratch)
    production = add_ia3_peft(copy.deepcopy(base))
    vectors = dict(ia3.ia3_layers(scratch))
    for name, p in production.named_parameters():
        if "ia3_l" in name:
            path = name.removeprefix("base_model.model.").split(".ia3_l")[0]
            p.data.copy_(vectors[path].ia3_l.reshape(p.shape))
    return base, scratch, production


def test_identity_at_init(make_tiny, tokens):
    base = make_tiny()
    model = copy.deepcopy(base)
    report = ia3.add_ia3(model)
    assert report["trainable"] == 2 * (16 + 16 + 64)  # k, v outputs (kv heads 2 x 8) and down_proj's input
    torch.testing.assert_close(logits(model, tokens), logits(base, tokens), atol=0, rtol=0)


def test_same_vectors_same_logits_as_peft(make_tiny, tokens):
    _, scratch, production = scratch_and_peft(make_tiny)
    torch.testing.assert_close(logits(scratch, tokens), logits(production, tokens), atol=1e-5, rtol=0)
    assert ia3.count_parameters(scratch)["trainable"] == production.get_nb_trainable_parameters()[0]


def test_disabled_equals_base_and_folded_equals_unfolded(make_tiny, tokens):
    base, scratch, _ = scratch_and_peft(make_tiny)
    adapted = logits(scratch, tokens)
    assert not torch.allclose(adapted, logits(base, tokens), atol=1e-4)
    with ia3.disable_ia3(scratch):
        torch.testing.assert_close(logits(scratch, tokens), logits(base, tokens), atol=0, rtol=0)
    ia3.fold_ia3(scratch)
    assert not any(isinstance(m, ia3.IA3Linear) for m in scratch.modules())
    torch.testing.assert_close(logits(scratch, tokens), adapted, atol=1e-5, rtol=0)


def test_only_ia3_vectors_train(make_tiny, changed_by_training):
    model = make_tiny()
    ia3.add_ia3(model)
    changed = changed_by_training(model)
    assert changed and all(n.endswith(".ia3_l") for n in changed)


def test_saved_ia3_loads_in_peft_and_back(make_tiny, tokens, tmp_path):
    base, scratch, production = scratch_and_peft(make_tiny)
    ia3.save_ia3(scratch, tmp_path / "ours")
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")
    torch.testing.assert_close(logits(loaded, tokens), logits(scratch, tokens), atol=1e-5, rtol=0)
    production.save_pretrained(tmp_path / "theirs")
    fresh = copy.deepcopy(base)
    ia3.load_ia3(fresh, tmp_path / "theirs")
    torch.testing.assert_close(logits(fresh, tokens), logits(production, tokens), atol=1e-5, rtol=0)


def test_bad_input(make_tiny, tmp_path):
    with pytest.raises(ValueError, match="must also be in target_modules"):
        ia3.IA3Config(target_modules=("k_proj",), feedforward_modules=("down_proj",))
    with pytest.raises(InjectionError, match="Did you mean 'k_proj'"):
        ia3.add_ia3(make_tiny(), ia3.IA3Config(target_modules=("key_proj",), feedforward_modules=()))
    model = make_tiny()
    ia3.add_ia3(model)
    with pytest.raises(InjectionError, match="already wrapped"):
        ia3.add_ia3(model)
    ia3.save_ia3(model, tmp_path)
    from transformers import LlamaConfig, LlamaForCausalLM
    other = LlamaForCausalLM(LlamaConfig(vocab_size=257, hidden_size=32, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(ValueError, match=r"down_proj\.ia3_l in .* has shape \(1, 64\) .* \(1, 96\)"):
        ia3.load_ia3(other, tmp_path)
    ia3.fold_ia3(model)
    with pytest.raises(ValueError, match="no IA3"):
        ia3.save_ia3(model, tmp_path)


def test_ia3_on_an_nf4_base_computes_as_on_the_dequantized_model_and_folds_into_nf4(make_tiny, tokens):
    """IA3 wraps every kind of linear layer the course has (it once failed on NF4 with an AttributeError): on NF4
    layers it computes exactly what it computes on nn.Linear layers holding the dequantized weights, and folding
    re-quantizes the scaled weight, as merging LoRA into NF4 does."""
    from torch import nn

    from peftlab.core.inject import set_submodule
    from peftlab.methods.nf4 import dequantize_nf4, quantize_nf4
    from peftlab.methods.qlora import quantize_model

    targets = ia3.IA3Config()
    quantized = make_tiny()
    quantize_model(quantized, targets.target_modules)
    dense = make_tiny()
    for path, layer in quantized.named_modules():
        if hasattr(layer, "dequantized_weight"):
            linear = nn.Linear(layer.in_features, layer.out_features, bias=False)
            linear.weight.data.copy_(layer.dequantized_weight())
            set_submodule(dense, path, linear)
    for model in (quantized, dense):
        ia3.add_ia3(model, targets)
        randomize(model)
    # the same products on the same numbers (NF4 dequantizes, then calls the same linear): 1e-6 leaves room only
    # for a kernel that sums in another order
    torch.testing.assert_close(logits(quantized, tokens), logits(dense, tokens), atol=1e-6, rtol=0)
    base = make_tiny()
    quantize_model(base, targets.target_modules)
    with ia3.disable_ia3(quantized):
        torch.testing.assert_close(logits(quantized, tokens), logits(base, tokens), atol=0, rtol=0)

    layer = dict(ia3.ia3_layers(quantized))["model.layers.0.self_attn.k_proj"]
    scaled = layer.base_layer.dequantized_weight().float() * layer.ia3_l.detach().float()[:, None]  # k_proj: rows
    ia3.fold_ia3(quantized)
    k_proj = quantized.get_submodule("model.layers.0.self_attn.k_proj")
    assert torch.equal(k_proj.dequantized_weight(), dequantize_nf4(quantize_nf4(scaled, double_quant=True)))
