"""Hybrids: two PEFT methods in one model, composed from the scratch methods of this package.

The methods compose because they share one injection mechanism (:mod:`peftlab.core.inject`): each
wraps *different* modules (the input embedding, linear layers, whole blocks), a method may
wrap a layer that another method already wrapped, and no method may wrap the same module twice.
What a hybrid adds is only the bookkeeping: each method freezes everything but its own parameters,
so after the second one is in, the first one's parameters are made trainable again.

| hybrid | what is trained | production counterpart |
|---|---|---|
| soft prompt + LoRA | the prompt vectors and LoRA's A, B | none here: peft cannot stack prompt tuning and LoRA in one model (its mixed models take LoRA-family adapters only); AdapterHub has both methods but this course does not test their union |
| adapter + LoRA | a bottleneck adapter and LoRA's A, B | AdapterHub ``ConfigUnion(LoRAConfig, SeqBnConfig)`` -- tested equal (tests/test_hybrid.py) |
| QLoRA base + adapter | a bottleneck adapter over an NF4 base | AdapterHub adapter on a bitsandbytes 4-bit base (fp32 compute) -- tested against it |

Papers: the combinations follow He et al. 2022, "Towards a Unified View of Parameter-Efficient
Transfer Learning" (arXiv 2110.04366) and Mao et al. 2022, "UniPELT" (arXiv 2110.07577), which
combine adapters, prefix/prompt methods and LoRA; QLoRA + adapter puts Houlsby/Pfeiffer adapters
on the 4-bit base of Dettmers et al. 2023.
"""  # noqa: E501 -- the table above: a row per line

from __future__ import annotations

from torch import nn

from peftlab.core.inject import ALL_LINEAR, count_parameters
from peftlab.methods import bottleneck, lora, prompt, qlora


def _add_lora_keeping_trainable(model: nn.Module, lora_config: lora.LoraConfig) -> dict:
    """Add LoRA as a second method: it freezes all but its own parameters, so the first method's
    (whatever was trainable before) are made trainable again."""
    first_method = [p for p in model.parameters() if p.requires_grad]
    lora.add_lora(model, lora_config)
    for p in first_method:
        p.requires_grad_(True)
    return count_parameters(model)


def add_prompt_and_lora(model: nn.Module, prompt_config: prompt.PromptTuningConfig, lora_config: lora.LoraConfig,
                        tokenizer=None) -> dict:
    """A soft prompt in front of the input, and LoRA in the layers."""
    prompt.add_prompt(model, prompt_config, tokenizer=tokenizer)
    return _add_lora_keeping_trainable(model, lora_config)


def add_adapter_and_lora(model: nn.Module, name: str, adapter_config: bottleneck.AdapterConfig,
                         lora_config: lora.LoraConfig) -> dict:
    """A named bottleneck adapter, and LoRA in the layers (inside the adapter's blocks where they overlap)."""
    bottleneck.add_adapter(model, name, adapter_config)
    return _add_lora_keeping_trainable(model, lora_config)


def add_qlora_base_and_adapter(model: nn.Module, name: str, adapter_config: bottleneck.AdapterConfig,
                               targets=ALL_LINEAR, double_quant: bool = True) -> dict:
    """Quantize the linear layers to NF4 (frozen), then train a bottleneck adapter on top."""
    report = qlora.quantize_model(model, targets, double_quant=double_quant)
    bottleneck.add_adapter(model, name, adapter_config)  # trains only the adapter
    return {"bits_per_parameter": report["bits_per_parameter"], **count_parameters(model)}
