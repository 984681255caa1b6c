"""The course's methods on the architectures learners bring (issue 13): what each supports, and the adapters it saves."""

import copy
import json

import peft
import torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from peftlab.core.checkpoint import peft_task_type
from peftlab.methods import lora


def test_saved_adapters_carry_the_task_type_of_their_model(tmp_path):
    """A BERT encoder cannot generate: its adapter is saved without a task type, and peft loads it and computes
    what the scratch LoRA computes; a causal LM's adapter says CAUSAL_LM, as before."""
    torch.manual_seed(0)
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                vocab_size=100)).eval()
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, vocab_size=100))
    assert peft_task_type(bert) is None and peft_task_type(llama) == "CAUSAL_LM"
    base = copy.deepcopy(bert)
    lora.add_lora(bert, lora.LoraConfig(r=4, target_modules=("query", "value")))
    with torch.no_grad():
        for _, layer in lora.lora_layers(bert):
            layer.lora_B.weight.normal_()  # a trained-looking adapter, so that loading it matters
    folder = lora.save_lora(bert, tmp_path / "bert")
    assert json.loads((folder / "adapter_config.json").read_text())["task_type"] is None
    loaded = peft.PeftModel.from_pretrained(base, folder).eval()
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).last_hidden_state, bert(input_ids=ids).last_hidden_state, atol=1e-5)


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64)).eval()


def test_lora_on_gpt2_conv1d_equals_peft_and_round_trips(tmp_path):
    """GPT-2's projections are Conv1D (weight stored transposed): the scratch LoRA wraps them as peft does with
    fan_in_fan_out, computes the same, merges into the transposed weight, and saves what peft loads (both ways)."""
    base = _gpt2()
    ours = copy.deepcopy(base)
    lora.add_lora(ours, lora.LoraConfig(r=4, target_modules=("c_attn", "c_proj")))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn", "c_proj"],
                                                                      fan_in_fan_out=True, init_lora_weights=False))
    with torch.no_grad():
        for path, layer in lora.lora_layers(ours):
            peft_layer = theirs.base_model.model.get_submodule(path)
            layer.lora_A.weight.copy_(peft_layer.lora_A["default"].weight)
            layer.lora_B.weight.copy_(peft_layer.lora_B["default"].weight)
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        wanted = theirs(input_ids=ids).logits
        assert torch.allclose(ours(input_ids=ids).logits, wanted, atol=1e-5)
        folder = lora.save_lora(ours, tmp_path / "gpt2")
        assert json.loads((folder / "adapter_config.json").read_text())["fan_in_fan_out"] is True
        loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), folder).eval()
        assert torch.allclose(loaded(input_ids=ids).logits, wanted, atol=1e-5)
        theirs.save_pretrained(tmp_path / "from_peft")
        back = copy.deepcopy(base)
        lora.load_lora(back, tmp_path / "from_peft")
        assert torch.allclose(back(input_ids=ids).logits, wanted, atol=1e-5)
        lora.merge_lora(ours)
        assert torch.allclose(ours(input_ids=ids).logits, wanted, atol=1e-5), "merged equals unmerged"
