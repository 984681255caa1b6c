"""Hybrids: two PEFT methods in one model, composed from the scratch methods of this package.

The methods compose because they share one injection mechanism (:mod:`peftlab.core.inject`): each
wraps *different* modules (the input embedding, linear layers, whole blocks), a method may
wrap a layer that another method already wrapped, and no method may wrap the same module twice.
What a hybrid adds is only the bookkeeping: after both methods are in, both are trainable.

| hybrid | what is trained | production counterpart |
|---|---|---|
| soft prompt + LoRA | the prompt vectors and LoRA's A, B | none here: peft cannot stack prompt tuning and LoRA in one model (its mixed models take LoRA-family adapters only); AdapterHub has both methods but this course does not test their union |
| adapter + LoRA | a bottleneck adapter and LoRA's A, B | AdapterHub ``ConfigUnion(LoRAConfig, SeqBnConfig)`` -- tested equal (tests/test_hybrid.py) |
| QLoRA base + adapter | a bottleneck adapter over an NF4 base | AdapterHub adapter on a bitsandbytes 4-bit base (fp32 compute) -- tested against it |

Papers: the combinations follow He et al. 2022, "Towards a Unified View of Parameter-Efficient
Transfer Learning" (arXiv 2110.04366) and Mao et al. 2022, "UniPELT" (arXiv 2110.07577), which
combine adapters, prefix/prompt methods and LoRA; QLoRA + adapter puts Houlsby/Pfeiffer adapters
on the 4-bit base of Dettmers et al. 2023.
"""

from __future__ import annotations

from torch import nn

from peftlab.methods import bottleneck, lora, prompt, qlora
from peftlab.core.inject import count_parameters, freeze_except


def _train_only(model: nn.Module, *markers: str) -> dict:
    freeze_except(model, lambda name: any(marker in name for marker in markers))
    return count_parameters(model)


def add_prompt_and_lora(model: nn.Module, prompt_config: prompt.PromptTuningConfig, lora_config: lora.LoraConfig,
                        tokenizer=None) -> dict:
    """A soft prompt in front of the input, and LoRA in the layers."""
    prompt.add_prompt(model, prompt_config, tokenizer=tokenizer)
    lora.add_lora(model, lora_config)
    return _train_only(model, "embed_tokens.prompt", ".lora_A.", ".lora_B.")


def add_adapter_and_lora(model: nn.Module, name: str, adapter_config: bottleneck.AdapterConfig,
                         lora_config: lora.LoraConfig) -> dict:
    """A named bottleneck adapter, and LoRA in the layers (inside the adapter's blocks where they overlap)."""
    bottleneck.add_adapter(model, name, adapter_config)
    lora.add_lora(model, lora_config)
    return _train_only(model, f".adapters.{name}.", ".lora_A.", ".lora_B.")


def add_qlora_base_and_adapter(model: nn.Module, name: str, adapter_config: bottleneck.AdapterConfig,
                               targets=qlora.ALL_LINEAR, double_quant: bool = True) -> dict:
    """Quantize the linear layers to NF4 (frozen), then train a bottleneck adapter on top."""
    report = qlora.quantize_model(model, targets, double_quant=double_quant)
    bottleneck.add_adapter(model, name, adapter_config)
    return {"bits_per_parameter": report["bits_per_parameter"], **_train_only(model, f".adapters.{name}.")}
