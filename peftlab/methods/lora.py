"""LoRA from scratch: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv 2106.09685).

A frozen linear layer ``W0`` learns an update of rank ``r`` instead of a full ``d_out x d_in``
matrix::

    h = W0 x + s * B A x,    A: r x d_in,  B: d_out x r,  s = alpha / r   (rsLoRA: alpha / sqrt(r))

``B`` starts at zero, so training starts exactly at the base model; ``A`` starts as peft
initialises it (Kaiming-uniform, a=sqrt(5), the default of ``nn.Linear``). After training,
``s * B A`` can be added into ``W0`` (merge): the model is then as fast as the base.

The file reads top to bottom: the config, the layer, the functions that put layers into
a model and take them out, then saving and loading in peft's own format, so that
``peft.PeftModel.from_pretrained`` loads what peftlab saves, and the reverse.
It imports torch and the shared injection mechanism (:mod:`peftlab.core.inject`), never peft.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from peftlab.core import checks
from peftlab.core.architectures import peft_task_type
from peftlab.core.checkpoint import PEFT_PREFIX, check_tensors, load_folder, save_folder
from peftlab.core.inject import (FrozenLinear, InjectionError, Wrapper, count_parameters, fan_in_fan_out, find_targets,
                                 forget, freeze_except, is_linear, layer_device, linear_dims, required_wrappers,
                                 transpose, unwrap, wrap_targets, wrappers_disabled)


@dataclass
class LoraConfig:
    r: int = 8                        # rank of the update; 8 is the LoRA paper's and peft's usual start
    alpha: float = 16                 # the update is scaled by alpha / r: raising r alone does not raise the step size
    dropout: float = 0.0              # dropout on the LoRA branch's input only; the frozen path never sees it
    # Layer names, matched at the end of a module's path (core.inject.matches); or one compiled regular expression
    # over whole paths, peft's string form (it selects layers: re.compile(r".*layers\.[0-3]\..*q_proj")).
    target_modules: tuple[str | re.Pattern, ...] = ("q_proj", "v_proj")  # the LoRA paper's choice (Wq, Wv)
    use_rslora: bool = False          # rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski 2023)

    def __post_init__(self):
        if isinstance(self.target_modules, (str, re.Pattern)):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)
        if any(isinstance(t, re.Pattern) for t in self.target_modules) and len(self.target_modules) > 1:
            raise ValueError("target_modules: give layer names, or one regular expression over whole module paths (as "
                             f"peft does), not both; got {self.target_modules!r}")
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ValueError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        checks.fraction("LoRA dropout", self.dropout)
        checks.positive_number("LoRA alpha", self.alpha, " (the update is scaled by alpha / r)")

    @property
    def scaling(self) -> float:
        return self.alpha / math.sqrt(self.r) if self.use_rslora else self.alpha / self.r


def check_rank(r: int, layer: nn.Linear | FrozenLinear, path: str = "this layer") -> None:
    """A rank above min(d_in, d_out) adds parameters without adding expressive power: refuse it."""
    d_in, d_out = linear_dims(layer)
    if r > min(d_in, d_out):
        raise ValueError(f"LoRA rank r={r} is larger than {path} ({d_out}x{d_in}) allows: a rank above "
                         f"min(d_in, d_out) adds parameters without adding expressive power; use r <= {min(d_in, d_out)}")


class LoRALinear(Wrapper):
    """``base_layer(x) + scaling * lora_B(lora_A(dropout(x)))`` around a frozen ``nn.Linear``
    (or a :class:`~peftlab.core.inject.FrozenLinear`, such as an NF4 layer: that is QLoRA)."""

    method_name = "LoRA"

    def __init__(self, base_layer: nn.Linear | FrozenLinear, config: LoraConfig):
        super().__init__()
        check_rank(config.r, base_layer)
        d_in, d_out = linear_dims(base_layer)
        self.fan_in_fan_out = fan_in_fan_out(base_layer)
        self.base_layer = base_layer
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(d_in, config.r, bias=False)
        self.lora_B = nn.Linear(config.r, d_out, bias=False)
        self.scaling = config.scaling
        self.merged = False
        like = next(base_layer.buffers(), None) if isinstance(base_layer, FrozenLinear) else base_layer.weight
        dtype = getattr(base_layer, "compute_dtype", None) or like.dtype
        self.to(dtype=dtype)
        self.reset_parameters()  # on the CPU, by its generator: a seed gives the same A on any device
        self.to(device=layer_device(base_layer))

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def delta_weight(self) -> torch.Tensor:
        """The dense update ``scaling * B @ A`` that merging adds to the base weight."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged or self.disabled:
            return result
        lora_x = x.to(self.lora_A.weight.dtype)
        return result + (self.lora_B(self.lora_A(self.lora_dropout(lora_x))) * self.scaling).to(result.dtype)

    @torch.no_grad()
    def _add_to_base(self, delta: torch.Tensor) -> None:
        if isinstance(self.base_layer, FrozenLinear):  # e.g. NF4 (stored as (d_out, d_in) even from a Conv1D):
            # dequantize, add, requantize (lossy)
            self.base_layer.merge_delta(delta)
        else:  # B A is (d_out, d_in); a Conv1D stores its weight the other way round
            self.base_layer.weight += transpose(delta, self.fan_in_fan_out).to(self.base_layer.weight.dtype)

    def merge(self) -> None:
        if self.merged:
            raise RuntimeError("this LoRA layer is already merged; merging again would add the update twice")
        self._add_to_base(self.delta_weight())
        self.merged = True

    def unmerge(self) -> None:
        if not self.merged:
            raise RuntimeError("this LoRA layer is not merged")
        self._add_to_base(-self.delta_weight())
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.lora_A.out_features}, scaling={self.scaling:g}, merged={self.merged}"


# --- putting LoRA into a model, and taking it out ---------------------------------------

def add_lora(model: nn.Module, config: LoraConfig | None = None) -> dict:
    """Wrap every target module of ``model`` in a LoRALinear and freeze all but LoRA's A and B.

    ``config``: a LoraConfig (None: the defaults, the LoRA paper's r=8 on q and v).
    Changes ``model`` in place and returns a report: the wrapped paths and the parameter counts.
    """
    config = config if config is not None else LoraConfig()
    targets = find_targets(model, config.target_modules)
    for path, module in targets:  # validate the rank on every target before changing anything
        if is_linear(module):
            check_rank(config.r, module, path)
    paths = wrap_targets(model, targets, lambda m: LoRALinear(m, config), LoRALinear)  # every kind of linear layer
    model.peftlab_lora_config = config
    freeze_except(model, lambda name: ".lora_A." in name or ".lora_B." in name)
    return {"wrapped": paths, **count_parameters(model)}


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    return required_wrappers(model, LoRALinear, "peftlab.methods.lora.add_lora(model, config)")


def merge_lora(model: nn.Module) -> None:
    for _, layer in lora_layers(model):
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    for _, layer in lora_layers(model):
        layer.unmerge()


@contextlib.contextmanager
def disable_lora(model: nn.Module):
    """Inside this block the model computes exactly as the base model (merged layers are unmerged first)."""
    layers = [layer for _, layer in lora_layers(model)]
    remerge = [layer for layer in layers if layer.merged]
    for layer in remerge:
        layer.unmerge()
    try:
        with wrappers_disabled(layers):
            yield model
    finally:
        for layer in remerge:
            layer.merge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every update into its base weight and remove the LoRA modules: a plain model again."""
    for _, layer in lora_layers(model):
        if not layer.merged:
            layer.merge()
    unwrap(model, LoRALinear)
    forget(model, "peftlab_lora_config")
    return model


def remove_lora(model: nn.Module) -> nn.Module:
    """Remove the LoRA modules without merging: back to the base model."""
    for _, layer in lora_layers(model):
        if layer.merged:
            layer.unmerge()
    unwrap(model, LoRALinear)
    forget(model, "peftlab_lora_config")
    return model


# --- saving and loading, in peft's format ----------------------------------------------
# peft saves `adapter_config.json` and `adapter_model.safetensors` whose keys are
# PEFT_PREFIX ("base_model.model.") + module path + ".lora_A.weight" (the adapter's name is dropped).


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """LoRA's tensors under peft's key names."""
    state = {}
    for path, layer in lora_layers(model):
        state[f"{PEFT_PREFIX}{path}.lora_A.weight"] = layer.lora_A.weight.detach()
        state[f"{PEFT_PREFIX}{path}.lora_B.weight"] = layer.lora_B.weight.detach()
    return state


def peft_target_modules(config: LoraConfig) -> list[str] | str:
    """``target_modules`` as peft writes it: a list of names, or the one pattern's string (peft reads a string as a
    regular expression over whole module paths)."""
    (first, *_) = config.target_modules
    return first.pattern if isinstance(first, re.Pattern) else list(config.target_modules)


def peft_config_dict(config: LoraConfig, base_model_name_or_path: str | None = None,
                     task_type: str | None = "CAUSAL_LM", fan_in_fan_out: bool = False) -> dict:
    """The adapter_config.json that peft's LoraConfig reads (``task_type``: see ``peft_task_type``;
    ``fan_in_fan_out``: the adapted layers store their weights transposed, as GPT-2's Conv1D does)."""
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": peft_target_modules(config),
        "use_rslora": config.use_rslora,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "init_lora_weights": True,
        "use_dora": False,
        "modules_to_save": None,
        "layers_to_transform": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
    }


def save_lora(model: nn.Module, out_dir: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` that peft loads."""
    config = getattr(model, "peftlab_lora_config", None)
    if config is None:
        raise ValueError("this model has no LoRA added by peftlab.methods.lora.add_lora; nothing to save")
    if any(layer.merged for _, layer in lora_layers(model)):
        raise ValueError("LoRA is merged into the base weights; unmerge_lora(model) before saving the adapter")
    base = base_model_name_or_path or getattr(getattr(model, "config", None), "_name_or_path", None) or None
    transposed = any(layer.fan_in_fan_out for _, layer in lora_layers(model))
    return save_folder(out_dir, peft_config_dict(config, base, peft_task_type(model), transposed), lora_state_dict(model))


UNSUPPORTED_PEFT_OPTIONS = {  # peft options this from-scratch LoRA does not implement, and their neutral value
    "use_dora": False, "bias": "none", "modules_to_save": None,
    "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
}


def config_from_peft_dict(d: dict) -> LoraConfig:
    if d.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"this is a {d.get('peft_type')} adapter, not LoRA")
    for key, neutral in UNSUPPORTED_PEFT_OPTIONS.items():
        value = d.get(key, neutral)
        if value not in (neutral, None) and not (isinstance(neutral, dict) and not value):
            raise ValueError(f"the adapter uses peft option {key}={value!r}, which peftlab's LoRA does not implement; "
                             "load it with peft instead (peftlab.production)")
    targets = d["target_modules"]
    return LoraConfig(r=d["r"], alpha=d["lora_alpha"], dropout=d.get("lora_dropout", 0.0),
                      target_modules=re.compile(targets) if isinstance(targets, str) else tuple(sorted(targets)),
                      use_rslora=d.get("use_rslora", False))


def load_lora(model: nn.Module, adapter_dir: str | Path) -> dict:
    """Add LoRA to ``model`` as described by a peft-format folder and load its weights.

    Every tensor is checked against the model before anything is changed: a missing or
    unexpected tensor, or one whose shape differs from this base model's, is an error
    that names it.
    """
    raw_config, tensors = load_folder(adapter_dir)
    config = config_from_peft_dict(raw_config)
    targets = dict(find_targets(model, config.target_modules))
    expected = {}
    for path, module in targets.items():
        if not is_linear(module):
            raise InjectionError(f"{path} is a {type(module).__name__}; LoRA can only be loaded onto linear layers "
                                 "of a fresh base model")
        d_in, d_out = linear_dims(module)
        expected[f"{PEFT_PREFIX}{path}.lora_A.weight"] = (config.r, d_in)
        expected[f"{PEFT_PREFIX}{path}.lora_B.weight"] = (d_out, config.r)
    # fan_in_fan_out only tells how the base weights are stored; A and B have the same shapes either way, and each
    # layer here knows its own storage. peft, too, overrides the flag layer by layer (with a warning), and a GPT-2
    # quantized by bitsandbytes saves False. Only "True" with no transposed layer at all means another model.
    transposed = {path for path, module in targets.items() if fan_in_fan_out(module)}
    if raw_config.get("fan_in_fan_out", False) and not transposed:
        raise ValueError(f"the adapter in {adapter_dir} says fan_in_fan_out=True (saved for layers that store their "
                         f"weight transposed, like GPT-2's Conv1D), but none of its {len(targets)} target layers here "
                         "does: it was saved for another kind of model")
    tensors = {_strip_adapter_name(k): v for k, v in tensors.items()}
    check_tensors(expected, tensors, f"adapter in {adapter_dir}")
    report = add_lora(model, config)
    for path, layer in lora_layers(model):
        layer.lora_A.weight.data.copy_(tensors[f"{PEFT_PREFIX}{path}.lora_A.weight"])
        layer.lora_B.weight.data.copy_(tensors[f"{PEFT_PREFIX}{path}.lora_B.weight"])
    return report


def _strip_adapter_name(key: str) -> str:
    # Some peft versions keep the adapter name in saved keys: ".lora_A.default.weight".
    return re.sub(r"\.(lora_[AB])\.[^.]+\.weight$", r".\1.weight", key)
