"""IA3 from scratch: Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and
Cheaper than In-Context Learning" (arXiv 2205.05638).

(IA)^3 -- "Infused Adapter by Inhibiting and Amplifying Inner Activations" -- learns one
vector per adapted layer that rescales an activation element by element:

    keys      k = l_k * (W_k x)          values  v = l_v * (W_v x)
    feed-forward   y = W_down (l_ff * a),  a = the MLP's inner activation, the input of down_proj

The vectors start at one (the identity), so training starts at the base model. A vector
that scales a layer's output multiplies the rows of its weight; one that scales the input
multiplies the columns. Either way it can be **folded** into the weight, after which
the model is exactly the base architecture: no inference cost.

Which layers to scale depends on how the architecture names them. ``IA3Config()`` holds peft's
defaults for Llama (``k_proj``, ``v_proj``, ``down_proj``; ``down_proj`` scaled on its input);
``add_ia3(model)`` without a config looks the model's type up in ``IA3_DEFAULTS``, peft's own table
(GPT-2: ``c_attn``, ``mlp.c_proj``; BERT: ``key``, ``value``, ``output.dense``; ...). Two shapes of
layer need a word:

- GPT-2's ``Conv1D`` computes ``x @ W + b`` with ``W`` stored as (d_in, d_out): the vector is the same,
  only folding multiplies the other axis of the weight (peft calls this ``fan_in_fan_out``);
- a fused projection (GPT-2's ``c_attn``, Phi-3's ``qkv_proj``) computes q, k and v in one matrix: the
  vector scales its whole output, queries included, as peft does. (IA3's paper scales only k and v;
  on a fused layer that would need the vector split in three, which peft does not do either.)

Saved files are peft's format, so ``peft.PeftModel.from_pretrained`` loads them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from peftlab.core.architectures import IA3_DEFAULTS, model_type, peft_task_type
from peftlab.core.checkpoint import PEFT_PREFIX, check_tensors, load_folder, save_folder
from peftlab.core.inject import (FrozenLinear, InjectionError, Wrapper, count_parameters, fan_in_fan_out, find_targets,
                                 forget, freeze_except, is_linear, layer_device, linear_dims, matches, required_wrappers,
                                 unwrap, wrap_targets, wrappers_disabled)


@dataclass
class IA3Config:
    target_modules: tuple[str, ...] = ("k_proj", "v_proj", "down_proj")
    feedforward_modules: tuple[str, ...] = ("down_proj",)  # scaled on the input (the MLP activation), not the output

    def __post_init__(self):
        self.target_modules = (self.target_modules,) if isinstance(self.target_modules, str) else tuple(self.target_modules)
        self.feedforward_modules = ((self.feedforward_modules,) if isinstance(self.feedforward_modules, str)
                                    else tuple(self.feedforward_modules))
        stray = [m for m in self.feedforward_modules if m not in self.target_modules]
        if stray:
            raise ValueError(f"feedforward_modules {stray} must also be in target_modules {list(self.target_modules)}")


def default_config(model: nn.Module) -> IA3Config:
    """The IA3Config for ``model``'s architecture (``IA3_DEFAULTS``), or an error that says what to pass instead."""
    kind = model_type(model)
    if kind not in IA3_DEFAULTS:
        raise ValueError(f"IA3 has no default target modules for model type {kind!r} "
                         f"({type(model).__name__}); peftlab knows {sorted(IA3_DEFAULTS)}. Name them yourself: "
                         "add_ia3(model, IA3Config(target_modules=(...), feedforward_modules=(...))), the key and value "
                         "projections and the MLP's output projection (scaled on its input)")
    targets, feedforward = IA3_DEFAULTS[kind]
    return IA3Config(target_modules=targets, feedforward_modules=feedforward)


class IA3Linear(Wrapper):
    """A frozen linear layer (``nn.Linear``, GPT-2's ``Conv1D``, or an NF4 layer) whose output (or, for feed-forward
    layers, input) is scaled by a learned vector."""

    method_name = "IA3"

    def __init__(self, base_layer: nn.Module, is_feedforward: bool):
        super().__init__()
        self.base_layer = base_layer
        self.is_feedforward = is_feedforward
        self.fan_in_fan_out = fan_in_fan_out(base_layer)  # Conv1D stores its weight as (d_in, d_out)
        d_in, d_out = linear_dims(base_layer)
        self.ia3_l = nn.Parameter(torch.ones(d_in if is_feedforward else d_out, device=layer_device(base_layer)))
        self.folded = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.disabled or self.folded:
            return self.base_layer(x)
        if self.is_feedforward:
            return self.base_layer(x * self.ia3_l.to(x.dtype))
        out = self.base_layer(x)
        return out * self.ia3_l.to(out.dtype)

    @torch.no_grad()
    def fold(self) -> None:
        """Multiply the vector into the weight: its input axis for feed-forward layers, its output axis (and the
        bias) otherwise. ``nn.Linear`` stores (d_out, d_in), ``Conv1D`` (d_in, d_out): the axes swap."""
        if self.folded:
            raise RuntimeError("this IA3 layer is already folded; folding again would scale twice")
        if isinstance(self.base_layer, FrozenLinear):  # NF4: its (d_out, d_in) weight, dequantized, scaled, re-quantized
            w = self.base_layer.dequantized_weight().float()
            scale = self.ia3_l.float()
            self.base_layer.store_weight(w * (scale[None, :] if self.is_feedforward else scale[:, None]))  # rounds
        else:
            w = self.base_layer.weight
            scale = self.ia3_l.to(w.dtype)
            scales_rows = self.is_feedforward == self.fan_in_fan_out  # input of a Conv1D, or output of a Linear
            if scales_rows:
                w.mul_(scale[:, None])
            else:
                w.mul_(scale[None, :])
        if not self.is_feedforward and self.base_layer.bias is not None:  # the output's scale applies to the bias too
            self.base_layer.bias.mul_(self.ia3_l.to(self.base_layer.bias.dtype))
        self.folded = True

    def extra_repr(self) -> str:
        return f"scales={'input' if self.is_feedforward else 'output'}, size={self.ia3_l.numel()}, folded={self.folded}"


def _is_feedforward(path: str, config: IA3Config) -> bool:
    return any(matches(path, m) for m in config.feedforward_modules)


def add_ia3(model: nn.Module, config: IA3Config | None = None) -> dict:
    """Wrap the targets in IA3Linear and freeze everything but the IA3 vectors; returns a report.

    ``config``: an IA3Config (None: peft's defaults for the model's architecture, see ``IA3_DEFAULTS``)."""
    config = config if config is not None else default_config(model)
    targets = find_targets(model, config.target_modules)
    by_module = {id(m): _is_feedforward(p, config) for p, m in targets}
    paths = wrap_targets(model, targets, lambda m: IA3Linear(m, by_module[id(m)]), IA3Linear)  # every kind of linear
    model.peftlab_ia3_config = config
    freeze_except(model, lambda name: name.endswith(".ia3_l"))
    return {"wrapped": paths, **count_parameters(model)}


def ia3_layers(model: nn.Module) -> list[tuple[str, IA3Linear]]:
    return required_wrappers(model, IA3Linear, "peftlab.methods.ia3.add_ia3(model, config)")


@contextlib.contextmanager
def disable_ia3(model: nn.Module):
    """Inside this block the model computes as the base model (not available once folded)."""
    layers = [layer for _, layer in ia3_layers(model)]
    if any(layer.folded for layer in layers):
        raise RuntimeError("IA3 is folded into the weights and cannot be switched off; reload the base model")
    with wrappers_disabled(layers):
        yield model


def fold_ia3(model: nn.Module) -> nn.Module:
    """Fold every vector into its weight and remove the IA3 modules: the base architecture, adapted."""
    for _, layer in ia3_layers(model):
        layer.fold()
    unwrap(model, IA3Linear)
    forget(model, "peftlab_ia3_config")
    return model


def remove_ia3(model: nn.Module) -> nn.Module:
    for _, layer in ia3_layers(model):
        if layer.folded:
            raise RuntimeError("IA3 is folded into the weights; it cannot be removed. Reload the base model")
    unwrap(model, IA3Linear)
    forget(model, "peftlab_ia3_config")
    return model


# --- saving and loading, in peft's format: vectors of shape (out, 1), or (1, in) for feed-forward ---

def _peft_shape(layer: IA3Linear) -> tuple[int, int]:
    n = layer.ia3_l.numel()
    return (1, n) if layer.is_feedforward else (n, 1)


def save_ia3(model: nn.Module, out_dir: str | Path) -> Path:
    config = getattr(model, "peftlab_ia3_config", None)
    if config is None:
        raise ValueError("this model has no IA3 added by peftlab.methods.ia3.add_ia3; nothing to save")
    layers = ia3_layers(model)
    if any(layer.folded for _, layer in layers):
        raise ValueError("IA3 is folded into the weights; save before folding")
    peft_config = {"peft_type": "IA3", "task_type": peft_task_type(model), "target_modules": list(config.target_modules),
                   "feedforward_modules": list(config.feedforward_modules),
                   "fan_in_fan_out": any(layer.fan_in_fan_out for _, layer in layers),
                   "init_ia3_weights": True, "modules_to_save": None, "inference_mode": True,
                   "base_model_name_or_path": getattr(getattr(model, "config", None), "_name_or_path", None) or None}
    tensors = {f"{PEFT_PREFIX}{path}.ia3_l": layer.ia3_l.detach().reshape(_peft_shape(layer)) for path, layer in layers}
    return save_folder(out_dir, peft_config, tensors)


def load_ia3(model: nn.Module, adapter_dir: str | Path) -> dict:
    """Add IA3 as described by a peft-format folder and load its vectors (checked before any change)."""
    raw, tensors = load_folder(adapter_dir)
    if raw.get("peft_type") != "IA3":
        raise ValueError(f"{adapter_dir} holds a {raw.get('peft_type')} adapter, not IA3")
    config = IA3Config(target_modules=tuple(raw["target_modules"]),
                       feedforward_modules=tuple(raw.get("feedforward_modules") or ()))
    expected = {}
    for path, module in find_targets(model, config.target_modules):
        if not is_linear(module):
            raise InjectionError(f"{path} is a {type(module).__name__}; load IA3 onto a fresh base model")
        d_in, d_out = linear_dims(module)
        n = d_in if _is_feedforward(path, config) else d_out
        expected[f"{PEFT_PREFIX}{path}.ia3_l"] = (1, n) if _is_feedforward(path, config) else (n, 1)
    tensors = {k.replace(".ia3_l.default", ".ia3_l"): v for k, v in tensors.items()}
    check_tensors(expected, tensors, f"IA3 adapter in {adapter_dir}")
    report = add_ia3(model, config)
    for path, layer in ia3_layers(model):
        layer.ia3_l.data.copy_(tensors[f"{PEFT_PREFIX}{path}.ia3_l"].flatten())
    return report
