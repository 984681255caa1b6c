"""peft's invariants for the scratch LoRA, and clear errors on bad input."""

import copy
import json

import pytest
import torch

from peftlab import ALL_LINEAR
from peftlab.core.inject import InjectionError
from peftlab.methods import lora


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


def test_identity_at_init(make_tiny, tokens):
    base = make_tiny()
    model = copy.deepcopy(base)
    report = lora.add_lora(model, lora.LoraConfig(target_modules=ALL_LINEAR))
    assert len(report["wrapped"]) == 2 * 7
    torch.testing.assert_close(logits(model, tokens), logits(base, tokens), atol=0, rtol=0)


def test_disabled_equals_base(make_tiny, tokens, randomize_lora_B):
    base = make_tiny()
    model = copy.deepcopy(base)
    lora.add_lora(model, lora.LoraConfig(target_modules=ALL_LINEAR))
    randomize_lora_B(model)
    assert not torch.allclose(logits(model, tokens), logits(base, tokens), atol=1e-4)
    with lora.disable_lora(model):
        torch.testing.assert_close(logits(model, tokens), logits(base, tokens), atol=1e-6, rtol=0)
    lora.merge_lora(model)  # disabling a merged model unmerges inside the block and re-merges after
    with lora.disable_lora(model):
        torch.testing.assert_close(logits(model, tokens), logits(base, tokens), atol=1e-5, rtol=0)
    assert all(layer.merged for _, layer in lora.lora_layers(model))


def test_only_lora_parameters_change_in_training(make_tiny, changed_by_training):
    model = make_tiny()
    lora.add_lora(model, lora.LoraConfig(target_modules=ALL_LINEAR))
    changed = changed_by_training(model)
    assert changed, "nothing trained"
    assert all(".lora_A." in n or ".lora_B." in n for n in changed)
    assert any(".lora_A." in n for n in changed) and any(".lora_B." in n for n in changed)


def test_merged_unmerged_and_unloaded_agree(make_tiny, tokens, randomize_lora_B):
    model = make_tiny()
    lora.add_lora(model, lora.LoraConfig(r=4, target_modules=ALL_LINEAR))
    randomize_lora_B(model)
    unmerged = logits(model, tokens)
    lora.merge_lora(model)
    torch.testing.assert_close(logits(model, tokens), unmerged, atol=1e-4, rtol=0)
    lora.unmerge_lora(model)
    torch.testing.assert_close(logits(model, tokens), unmerged, atol=1e-4, rtol=0)
    lora.merge_and_unload(model)
    assert not any(isinstance(m, lora.LoRALinear) for m in model.modules())
    torch.testing.assert_close(logits(model, tokens), unmerged, atol=1e-4, rtol=0)


def test_remove_lora_restores_the_base(make_tiny, tokens, randomize_lora_B):
    base = make_tiny()
    model = copy.deepcopy(base)
    lora.add_lora(model, lora.LoraConfig(target_modules=ALL_LINEAR))
    randomize_lora_B(model)
    lora.remove_lora(model)
    torch.testing.assert_close(logits(model, tokens), logits(base, tokens), atol=0, rtol=0)
    lora.add_lora(model, lora.LoraConfig())  # and LoRA can be added again after removal


def test_double_merge_is_refused(make_tiny):
    model = make_tiny()
    lora.add_lora(model, lora.LoraConfig())
    lora.merge_lora(model)
    with pytest.raises(RuntimeError, match="already merged"):
        lora.merge_lora(model)


def test_save_load_round_trip(make_tiny, tokens, tmp_path, randomize_lora_B):
    base = make_tiny()
    model = copy.deepcopy(base)
    lora.add_lora(model, lora.LoraConfig(r=4, alpha=4, target_modules=("q_proj", "down_proj")))
    randomize_lora_B(model)
    lora.save_lora(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    fresh = copy.deepcopy(base)
    lora.load_lora(fresh, tmp_path)
    torch.testing.assert_close(logits(fresh, tokens), logits(model, tokens), atol=1e-6, rtol=0)


def test_rslora_scaling():
    assert lora.LoraConfig(r=16, alpha=8).scaling == 0.5
    assert lora.LoraConfig(r=16, alpha=8, use_rslora=True).scaling == 2.0


# --- bad input -------------------------------------------------------------------------

def test_misspelt_target_names_the_closest(make_tiny):
    with pytest.raises(InjectionError, match=r"'q_prj'.*Did you mean 'q_proj'.*down_proj"):
        lora.add_lora(make_tiny(), lora.LoraConfig(target_modules=("q_prj", "v_proj")))


def test_one_misspelt_name_among_good_ones_leaves_model_untouched(make_tiny):
    model = make_tiny()
    with pytest.raises(InjectionError):
        lora.add_lora(model, lora.LoraConfig(target_modules=("v_proj", "up_prj")))
    assert not any(isinstance(m, lora.LoRALinear) for m in model.modules())


@pytest.mark.parametrize("r", [0, -1, 2.5])
def test_rank_must_be_positive_integer(r):
    with pytest.raises(ValueError, match="positive integer"):
        lora.LoraConfig(r=r)


def test_rank_larger_than_layer_is_refused(make_tiny):
    model = make_tiny()  # k_proj is 32 -> 16
    with pytest.raises(ValueError, match=r"k_proj \(16x32\).*r <= 16"):
        lora.add_lora(model, lora.LoraConfig(r=17, target_modules=("q_proj", "k_proj")))
    assert not any(isinstance(m, lora.LoRALinear) for m in model.modules())


def test_adding_twice_is_refused(make_tiny, tokens, randomize_lora_B):
    model = make_tiny()
    lora.add_lora(model, lora.LoraConfig())
    randomize_lora_B(model)
    before = logits(model, tokens)
    with pytest.raises(InjectionError, match="already wrapped.*run twice"):
        lora.add_lora(model, lora.LoraConfig())
    torch.testing.assert_close(logits(model, tokens), before, atol=0, rtol=0)


def test_unwrappable_module_type(make_tiny):
    with pytest.raises(InjectionError, match="Embedding, which LoRA cannot wrap"):
        lora.add_lora(make_tiny(), lora.LoraConfig(target_modules=("embed_tokens",)))


def test_loading_onto_a_base_of_another_shape_names_the_tensor(make_tiny, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = make_tiny()
    lora.add_lora(model, lora.LoraConfig())
    lora.save_lora(model, tmp_path)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=257, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(ValueError, match=r"layers\.0\.self_attn\.q_proj\.lora_A\.weight in .* has shape \(8, 32\).*\(8, 48\)"):
        lora.load_lora(other, tmp_path)


def test_loading_a_missing_folder(make_tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        lora.load_lora(make_tiny(), tmp_path / "nope")


def test_saving_a_merged_adapter_is_refused(make_tiny, tmp_path):
    model = make_tiny()
    lora.add_lora(model, lora.LoraConfig())
    lora.merge_lora(model)
    with pytest.raises(ValueError, match="unmerge"):
        lora.save_lora(model, tmp_path)


def test_unsupported_peft_options_are_refused(make_tiny, tmp_path):
    model = make_tiny()
    lora.add_lora(model, lora.LoraConfig())
    lora.save_lora(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["use_dora"] = True
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="use_dora"):
        lora.load_lora(make_tiny(), tmp_path)
