"""QLoRA from scratch: Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs"
(arXiv 2305.14314).

QLoRA is two ideas composed, both already in this package:

1. store the frozen base model's linear layers in 4-bit NormalFloat with double-quantized
   scales (:mod:`peftlab.methods.nf4`, ``NF4Linear``), dequantizing each weight on the fly in the
   forward pass, in the compute dtype;
2. train LoRA (:mod:`peftlab.methods.lora`) on top, in full precision. Gradients flow through the
   dequantized weights into the LoRA matrices; the 4-bit weights never change.

The paper's recipe puts LoRA on **all** linear layers (it found that attention-only LoRA on
a 4-bit base does not match 16-bit fine-tuning), so that is the default here. Paged
optimizers, the paper's third idea, are about GPU memory spikes and have no CPU counterpart.

Merging LoRA into a 4-bit base is possible but lossy: the merged weight must be quantized
again (``NF4Linear.merge_delta``), which rounds it to the 16 levels of its block.
"""

from __future__ import annotations

from torch import nn

from peftlab.core.inject import ALL_LINEAR, InjectionError, find_targets, freeze_except, is_dense_linear, set_submodule
from peftlab.methods.lora import LoraConfig, add_lora
from peftlab.methods.nf4 import NF4Linear


def quantize_model(model: nn.Module, targets=ALL_LINEAR, double_quant: bool = True) -> dict:
    """Replace every target ``nn.Linear`` (or GPT-2 ``Conv1D``) with a frozen NF4Linear; report the bytes of those weights."""
    found = find_targets(model, targets)
    for path, module in found:
        if isinstance(module, NF4Linear):
            raise InjectionError(f"{path} is already quantized to NF4 (was this cell run twice?); "
                                 "quantizing a quantized weight would round it twice. Start from a fresh base model")
        if not is_dense_linear(module):
            raise InjectionError(f"{path} is a {type(module).__name__}; only plain nn.Linear layers (and GPT-2's "
                                 "Conv1D) are quantized")
    before = after = 0
    for path, module in found:
        before += module.weight.numel() * module.weight.element_size()
        layer = NF4Linear(module, double_quant=double_quant)
        after += layer.weight_nf4.nbytes()
        set_submodule(model, path, layer)
    freeze_except(model, lambda name: False)  # the whole base is frozen; a method added next trains its own
    return {"quantized": [p for p, _ in found], "bytes_before": before, "bytes_after": after,
            "bits_per_parameter": 8 * after / (before / found[0][1].weight.element_size())}


def add_qlora(model: nn.Module, lora_config: LoraConfig | None = None, double_quant: bool = True) -> dict:
    """Quantize the linear layers that LoRA targets to NF4, then add LoRA on top of them.

    ``lora_config``: a LoraConfig (None: r=8 on every linear layer, the paper's recipe)."""
    lora_config = lora_config if lora_config is not None else LoraConfig(target_modules=ALL_LINEAR)
    report = quantize_model(model, lora_config.target_modules, double_quant=double_quant)
    return {**report, **add_lora(model, lora_config)}
