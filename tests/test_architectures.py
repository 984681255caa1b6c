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
