"""Bottleneck adapters from scratch: Houlsby et al. 2019, "Parameter-Efficient Transfer Learning
for NLP" (arXiv 1902.00751), and the Pfeiffer placement (Pfeiffer et al. 2020, "AdapterFusion",
arXiv 2005.00247).

An adapter is a small two-layer network with a residual connection, inserted into every
transformer layer while the layer itself stays frozen::

    A(h) = W_up · f(W_down · h + b_down) + b_up          W_down: m x d,  W_up: d x m,  m = d / reduction_factor
    h  ->  h + A(h)

- **Houlsby**: one adapter after the attention block and one after the feed-forward block,
  nonlinearity swish (SiLU). **Pfeiffer**: one adapter after the feed-forward block only, ReLU.
- **Near-identity start**: small random weights (``init="bert"``, normal with std 0.02, as
  AdapterHub does), so A(h) is close to zero; ``init="identity"`` zeroes W_up and starts exactly
  at the base model.
- **Several named adapters** can live in one model, one per task: ``add_adapter(model, "sentiment")``,
  ``set_active_adapter(model, "addition")``, ``delete_adapter(...)``. Switching costs nothing, and with
  no adapter active (or inside ``with disable_adapters(model):``) the model is exactly the base model:
  nothing of it was changed.

Where exactly the adapters sit in a Llama layer, matched to AdapterHub ``adapters`` (which
the tests check to 1e-5 with the same weights; AdapterHub applies no extra layer norm on Llama):

    Houlsby (DoubleSeqBnConfig):  a = attn(norm(x));  h = x + a + A1(a);  y = h + m + A2(m),  m = mlp(norm(h))
    Pfeiffer (SeqBnConfig):       h = x + attn(norm(x));  y' = h + mlp(norm(h));  y = y' + A(y')

So the Houlsby adapters wrap ``self_attn.o_proj`` and ``mlp`` (each adds ``A`` of that block's
output), and the Pfeiffer adapter wraps the whole decoder layer (it adds ``A`` of the layer's
output, residual included). The wrapping goes through :mod:`peftlab.core.inject`, like every method.

Other architectures, placed where AdapterHub places them (``core.architectures.ADAPTER_PLACES``; checked against it in
tests/test_architectures.py):

- **GPT-2** is pre-norm like Llama, with other names: Houlsby wraps ``attn.resid_dropout`` (the attention's
  last step) and ``mlp``; Pfeiffer wraps the whole block (``transformer.h.<i>``).
- **BERT** is *post*-norm: each sub-block ends in ``LayerNorm(h + x)``, h the sub-block's output, x its input.
  Houlsby puts the adapter before that norm, ``LayerNorm(h + A(h) + x)``: it wraps the dropout that
  ends each sub-block (``attention.output.dropout``, ``output.dropout``). Pfeiffer (``SeqBnConfig``), as
  AdapterHub implements it, adapts the normalised output and normalises again with the same
  LayerNorm: ``z = LayerNorm(s); y = LayerNorm(s + A(z))``, s = h + x. It wraps the MLP's LayerNorm
  (``layer.<i>.output.LayerNorm``), with ``renormalize`` on.

Qwen2, Gemma and Phi-3 decoders have Llama's structure and names, and get Llama's placement; AdapterHub
1.3 has no implementation for them, so there is nothing to compare with there.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from peftlab.core.architectures import ADAPTER_PLACES, LLAMA_LIKE, is_decoder_layer, model_type
from peftlab.core.checkpoint import check_tensors, load_folder, save_folder
from peftlab.core.inject import (InjectionError, Wrapper, count_parameters, find_targets, forget, freeze_except, unwrap,
                                 unwrap_at, wrap_targets, wrappers_disabled)

PLACEMENTS = ("houlsby", "pfeiffer")
HOULSBY_TARGETS = ("self_attn.o_proj", "mlp")  # after attention (its output projection) and after the MLP
ACTIVATIONS = {"swish": nn.SiLU, "silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclass
class AdapterConfig:
    placement: str = "houlsby"        # "houlsby": after attention and after the MLP; "pfeiffer": after the MLP only
    reduction_factor: int = 16        # bottleneck width = hidden size / reduction_factor (AdapterHub's default)
    non_linearity: str | None = None  # None: swish for houlsby, relu for pfeiffer, as in AdapterHub
    init: str = "bert"                # "bert": small random (near identity); "identity": W_up = 0 (exactly the base)

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise ValueError(f"unknown adapter placement {self.placement!r}; choose 'houlsby' or 'pfeiffer'")
        if self.non_linearity is None:
            self.non_linearity = "swish" if self.placement == "houlsby" else "relu"
        if self.non_linearity not in ACTIVATIONS:
            raise ValueError(f"unknown non_linearity {self.non_linearity!r}; choose one of {sorted(ACTIVATIONS)}")
        if self.init not in ("bert", "identity"):
            raise ValueError(f"unknown init {self.init!r}; choose 'bert' or 'identity'")
        if isinstance(self.reduction_factor, bool) or not isinstance(self.reduction_factor, (int, float)) \
                or self.reduction_factor <= 0:
            raise ValueError(f"reduction_factor must be a positive number, got {self.reduction_factor!r}")


class Bottleneck(nn.Module):
    """``up(f(down(h)))``: the adapter itself, without its residual."""

    def __init__(self, hidden: int, config: AdapterConfig):
        super().__init__()
        width = int(hidden // config.reduction_factor)
        if width < 1 or width > hidden:
            raise ValueError(f"bottleneck width {width} (hidden {hidden} / reduction_factor {config.reduction_factor}) "
                             f"must be between 1 and the hidden size {hidden}; choose reduction_factor in "
                             f"[1, {hidden}]")
        self.down = nn.Linear(hidden, width)
        self.act = ACTIVATIONS[config.non_linearity]()
        self.up = nn.Linear(width, hidden)
        for layer in (self.down, self.up):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        if config.init == "identity":
            nn.init.zeros_(self.up.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


class AdapterSlot(Wrapper):
    """A frozen module followed by ``h + A(h)`` for whichever named adapter is active (if any, and not disabled)."""

    method_name = "bottleneck adapters"

    def __init__(self, base_layer: nn.Module, hidden: int, renormalize: bool = False):
        super().__init__()
        self.base_layer = base_layer
        self.hidden = hidden
        self.renormalize = renormalize  # base_layer is a post-norm LayerNorm: y = norm(s + A(norm(s))) (BERT, Pfeiffer)
        self.adapters = nn.ModuleDict()
        self.active: str | None = None

    def forward(self, *args, **kwargs):
        out = self.base_layer(*args, **kwargs)
        if self.disabled or self.active is None or self.active not in self.adapters:
            return out
        adapter = self.adapters[self.active]
        # a whole transformer layer may return a tuple (GPT-2: (hidden states, ...)): the adapter acts on the first
        h = out[0] if isinstance(out, tuple) else out
        a = adapter(h.to(adapter.down.weight.dtype)).to(h.dtype)
        h = self.base_layer(args[0] + a) if self.renormalize else h + a
        return (h, *out[1:]) if isinstance(out, tuple) else h

    def __getattr__(self, name: str):
        # A slot may wrap a whole decoder layer, and some models read attributes of their layers (Qwen2 asks each
        # layer for its attention_type): what the slot does not have, it answers from the layer it wraps.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":  # not set yet (inside __init__): nothing to ask
                raise
            try:
                return getattr(self.base_layer, name)
            except AttributeError:  # name the slot too: the error is not only the wrapped layer's
                raise AttributeError(f"AdapterSlot (around a {type(self.base_layer).__name__}) has no attribute "
                                     f"{name!r}, nor does the layer it wraps") from None

    def extra_repr(self) -> str:
        return (f"adapters={list(self.adapters)}, active={self.active}, disabled={self.disabled}"
                + (", renormalize=True" if self.renormalize else ""))


def _hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "hidden_size"):
        raise ValueError("bottleneck adapters need a transformers model with config.hidden_size")
    return config.hidden_size


def _is_decoder_layer(m: nn.Module) -> bool:
    """A Llama-style decoder layer, or a slot that already wraps one (a second Pfeiffer adapter)."""
    return is_decoder_layer(m.base_layer if isinstance(m, AdapterSlot) else m)


def _targets(model: nn.Module, placement: str) -> list[tuple[str, nn.Module]]:
    kind = model_type(model)
    if kind in ADAPTER_PLACES:
        where = ADAPTER_PLACES[kind][placement]
        if placement == "houlsby":
            return find_targets(model, where)
        return find_targets(model, re.compile(where))
    # Anything else gets Llama's placement if it has Llama's structure: an o_proj and an mlp in each decoder layer.
    layers = [(p, m) for p, m in model.named_modules() if _is_decoder_layer(m)]
    names = {p.rsplit(".", 1)[-1] for p, _ in model.named_modules()}
    if not layers or not {"o_proj", "mlp"} <= names:
        raise InjectionError(
            f"bottleneck adapters: peftlab places them in Llama-style decoders ({', '.join(LLAMA_LIKE)}), GPT-2 and "
            f"BERT, where AdapterHub does; {type(model).__name__} (model type {kind!r}) is none of these, and "
            "where an adapter belongs depends on how each layer adds its residual and normalises. Use AdapterHub "
            "(`adapters`) for this model, or LoRA or IA3, which only need the names of its linear layers")
    return layers if placement == "pfeiffer" else find_targets(model, HOULSBY_TARGETS)


def _renormalize(model: nn.Module, placement: str) -> bool:
    return placement == "pfeiffer" and ADAPTER_PLACES.get(model_type(model), {}).get("renormalize", False)


def adapter_slots(model: nn.Module) -> list[tuple[str, AdapterSlot]]:
    """Every place that holds adapters, with its path."""
    return [(p, m) for p, m in model.named_modules() if isinstance(m, AdapterSlot)]


def adapter_names(model: nn.Module) -> list[str]:
    return sorted(getattr(model, "peftlab_adapter_configs", {}))


def add_adapter(model: nn.Module, name: str, config: AdapterConfig | None = None, activate: bool = True) -> dict:
    """Add a named bottleneck adapter to every layer; freeze all but the active adapter's weights.

    ``config``: an AdapterConfig (None: the defaults, Houlsby placement). Changes ``model`` in place.
    A second call with a new name adds a second adapter beside the first (the multi-task setting); the same name twice is an error.
    """
    if not name.isidentifier():
        raise ValueError(f"adapter name {name!r} must be a Python identifier (letters, digits, underscores)")
    configs = getattr(model, "peftlab_adapter_configs", {})
    if name in configs:
        raise InjectionError(f"this model already has an adapter named {name!r} (was this cell run twice?); "
                             f"use another name, or delete_adapter(model, {name!r}) first")
    config = config if config is not None else AdapterConfig()
    hidden = _hidden_size(model)
    Bottleneck(hidden, config)  # validate the width before changing anything
    targets = _targets(model, config.placement)
    fresh = [(p, m) for p, m in targets if not isinstance(m, AdapterSlot)]
    if fresh:
        renormalize = _renormalize(model, config.placement)
        wrap_targets(model, fresh, lambda m: AdapterSlot(m, hidden, renormalize), AdapterSlot,
                     wrappable=lambda m: True, kinds="any module")
    targets = [(p, model.get_submodule(p)) for p, _ in targets]
    param = next(model.parameters())
    # Initialised on the CPU by its generator, so that a seed gives the same adapter on any device, then moved
    # where the model lives; on "meta" (shapes only) it is built there, and nothing is allocated.
    with torch.device("meta" if param.device.type == "meta" else "cpu"):
        for _, slot in targets:
            slot.adapters[name] = Bottleneck(hidden, config).to(device=param.device, dtype=param.dtype)
    configs[name] = config
    model.peftlab_adapter_configs = configs
    if activate:
        set_active_adapter(model, name)
    return {"name": name, "positions": [p for p, _ in targets], **count_parameters(model)}


def set_active_adapter(model: nn.Module, name: str | None) -> None:
    """Route every layer through adapter ``name`` (None: no adapter, the base model); train only it."""
    if name is not None and name not in adapter_names(model):
        raise KeyError(f"no adapter named {name!r}; this model has {adapter_names(model)}")
    for _, slot in adapter_slots(model):
        slot.active = name
    freeze_except(model, lambda p: name is not None and f".adapters.{name}." in p)


def active_adapter(model: nn.Module) -> str | None:
    slots = adapter_slots(model)
    return slots[0][1].active if slots else None


@contextlib.contextmanager
def disable_adapters(model: nn.Module):
    """Inside this block no adapter is applied: the model computes exactly as the base."""
    with wrappers_disabled([slot for _, slot in adapter_slots(model)]):
        yield model


def delete_adapter(model: nn.Module, name: str) -> None:
    """Remove adapter ``name``; when none is left, the wrappers go too and the model is the base again."""
    if name not in adapter_names(model):
        raise KeyError(f"no adapter named {name!r}; this model has {adapter_names(model)}")
    for _, slot in adapter_slots(model):
        if name in slot.adapters:
            del slot.adapters[name]
        if slot.active == name:
            slot.active = None
    del model.peftlab_adapter_configs[name]
    for path, slot in adapter_slots(model):
        if len(slot.adapters) == 0:
            unwrap_at(model, path)
    if not model.peftlab_adapter_configs:
        forget(model, "peftlab_adapter_configs")


def remove_adapters(model: nn.Module) -> nn.Module:
    unwrap(model, AdapterSlot)
    forget(model, "peftlab_adapter_configs")
    return model


# --- saving and loading: adapter_config.json + adapter.safetensors (AdapterHub's file names) ---

def save_adapter(model: nn.Module, name: str, out_dir: str | Path) -> Path:
    if name not in adapter_names(model):
        raise KeyError(f"no adapter named {name!r}; this model has {adapter_names(model)}")
    config = model.peftlab_adapter_configs[name]
    tensors = {f"{path}.{key}": t for path, slot in adapter_slots(model) if name in slot.adapters
               for key, t in slot.adapters[name].state_dict().items()}
    return save_folder(out_dir, {"name": name, "hidden_size": _hidden_size(model), **asdict(config)}, tensors,
                       weights_name="adapter.safetensors")


def load_adapter(model: nn.Module, in_dir: str | Path, name: str | None = None, activate: bool = True) -> dict:
    """Add a saved adapter (under its saved name, or ``name``) and load its weights, checked first."""
    raw, tensors = load_folder(in_dir, weights_name="adapter.safetensors")
    name = name or raw["name"]
    config = AdapterConfig(**{k: raw[k] for k in ("placement", "reduction_factor", "non_linearity", "init")})
    hidden = _hidden_size(model)
    width = int(hidden // config.reduction_factor)
    expected = {}
    for path, _ in _targets(model, config.placement):
        expected.update({f"{path}.down.weight": (width, hidden), f"{path}.down.bias": (width,),
                         f"{path}.up.weight": (hidden, width), f"{path}.up.bias": (hidden,)})
    check_tensors(expected, tensors, f"adapter in {in_dir} (saved for hidden size {raw.get('hidden_size')})")
    report = add_adapter(model, name, config, activate=activate)
    for path, slot in adapter_slots(model):
        if name in slot.adapters:
            slot.adapters[name].load_state_dict({k: tensors[f"{path}.{k}"] for k in ("down.weight", "down.bias",
                                                                                      "up.weight", "up.bias")})
    return report
