"""Finding and wrapping target modules: the one mechanism every peftlab method uses.

A PEFT method changes a model in three steps, whatever the method:

1. **find** the modules to adapt, by name (``find_targets``) -- ``"q_proj"`` matches every
   module whose path ends in ``.q_proj``, as in peft;
2. **wrap** each one in a module that holds the frozen original plus the method's new
   parameters (``wrap_targets``); the wrapper keeps the original as ``base_layer``;
3. **freeze** everything that is not the method's (``freeze_except``).

Every method is switched off the same way: each wrapper has ``disabled`` (while True it computes
exactly as its ``base_layer``), and each method has a context manager ``disable_<method>(model)``
built on ``wrappers_disabled``, which puts every wrapper back as it was on leaving the block, even
on error. Whatever a method stores on the model (its config, hooks) is removed with it (``forget``).

The mechanism is strict where silent mistakes are common: a target name that matches
nothing is an error naming the closest real name; a module that is already wrapped
(a notebook cell run twice) is an error, not a second wrapper; a module of a type the
method cannot wrap is an error naming the type.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from typing import Callable, Iterable, Iterator

import torch
from torch import nn


class Wrapper(nn.Module):
    """Base class of every peftlab wrapper: ``base_layer`` is the frozen original module; while
    ``disabled`` is True the wrapper computes exactly as ``base_layer``."""

    base_layer: nn.Module
    method_name: str = "a PEFT method"

    def __init__(self):
        super().__init__()
        self.disabled = False


class FrozenLinear(nn.Module):
    """Base class of modules that compute like a frozen ``nn.Linear`` but store the weight
    another way (a quantized weight, say). Methods that wrap linear layers accept them.
    They have ``in_features`` and ``out_features``, and ``dequantized_weight()``, ``store_weight(w)`` and
    ``merge_delta(delta)`` to read and change their weight as a dense (d_out, d_in) matrix."""

    in_features: int
    out_features: int

    def dequantized_weight(self):
        """The weight as a dense (d_out, d_in) tensor, as the layer computes with it."""
        raise NotImplementedError

    def store_weight(self, weight):
        """Replace the stored weight by a dense (d_out, d_in) one (stored the layer's way: quantizing rounds)."""
        raise NotImplementedError

    @torch.no_grad()
    def merge_delta(self, delta):
        """Add a dense (d_out, d_in) update to the stored weight: read it dense, add, store again (NF4: this rounds)."""
        self.store_weight(self.dequantized_weight().float() + delta.float())


LINEAR_TYPES = (nn.Linear, FrozenLinear)


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's ``Conv1D`` (transformers.pytorch_utils): a linear layer computing ``x @ W + b`` with its weight
    stored transposed, as (d_in, d_out). Recognised by name, so that this file needs no transformers import."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def is_linear(module: nn.Module) -> bool:
    """The one answer to "is this a linear layer?": ``nn.Linear``, a ``FrozenLinear`` (NF4 and other stored-another-way
    weights) or GPT-2's ``Conv1D``. Every method that wraps linear layers, and every loader, asks this."""
    return isinstance(module, LINEAR_TYPES) or is_conv1d(module)


def is_dense_linear(module: nn.Module) -> bool:
    """A linear layer with a plain dense ``.weight`` (``nn.Linear`` itself, or a ``Conv1D``): what can be quantized.
    Subclasses of ``nn.Linear`` are left out: bitsandbytes' 4-bit and 8-bit layers are ones, already quantized."""
    return type(module) is nn.Linear or is_conv1d(module)


def fan_in_fan_out(module: nn.Module) -> bool:
    """Whether the layer's weight is stored as (d_in, d_out): a ``Conv1D``, or an NF4 layer quantized from one (which
    itself computes like ``nn.Linear``). peft saves this as ``fan_in_fan_out``."""
    return is_conv1d(module) or getattr(module, "fan_in_fan_out", False)


def transpose(weight, fan_in_fan_out: bool):
    """A (d_out, d_in) matrix in the storage of a layer with ``fan_in_fan_out`` (a Conv1D's (d_in, d_out)), or back:
    the one place the orientation flips (peft: ``utils.other.transpose``)."""
    return weight.T if fan_in_fan_out else weight


def linear_dims(module: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of a linear layer: ``nn.Linear`` and ``FrozenLinear`` name them; ``Conv1D`` stores them
    in its weight's shape."""
    if is_conv1d(module):
        d_in, d_out = module.weight.shape
        return d_in, d_out
    return module.in_features, module.out_features


def layer_device(module: nn.Module):
    """Where a layer's tensors are (a quantized layer keeps its weight in buffers, not in ``.weight``)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return None

# Every linear layer of a Llama-style block, by the names Llama-3, Mistral and Qwen use.
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class InjectionError(ValueError):
    """A target module could not be found or wrapped."""


def matches(path: str, target: str | re.Pattern) -> bool:
    """Whether a module path is named by a target. A name matches the whole path or its last components ("q_proj",
    "self_attn.q_proj"); a compiled regular expression must match the whole path, as peft reads a ``target_modules``
    string (``re.compile(r".*layers[.]0[.].*q_proj")``: one layer's query projection only)."""
    if isinstance(target, re.Pattern):
        return target.fullmatch(path) is not None
    return path == target or path.endswith("." + target)


def leaf_names(model: nn.Module, module_type: type | tuple = nn.Module) -> list[str]:
    """The distinct last path components of the model's modules of ``module_type``."""
    return sorted({path.rsplit(".", 1)[-1] for path, m in model.named_modules() if path and isinstance(m, module_type)})


def find_targets(model: nn.Module, target_names: Iterable[str | re.Pattern]) -> list[tuple[str, nn.Module]]:
    """All ``(path, module)`` pairs whose path ends with one of ``target_names`` (or matches one compiled pattern).

    Every name must match at least one module: a misspelt name raises and suggests
    the nearest existing one instead of quietly adapting fewer layers than asked.
    """
    if isinstance(target_names, (str, re.Pattern)):
        target_names = [target_names]
    target_names = list(target_names)
    if not target_names:
        raise InjectionError("no target modules given; name at least one, for example ['q_proj', 'v_proj']")
    modules = [(path, m) for path, m in model.named_modules() if path]
    for target in target_names:
        if not any(matches(path, target) for path, _ in modules):
            linear_names = sorted({p.rsplit(".", 1)[-1] for p, m in modules if is_linear(m)})
            if isinstance(target, re.Pattern):
                raise InjectionError(f"target pattern {target.pattern!r} matches no module path of {type(model).__name__} "
                                     f"(it must match a whole path, like {modules[-1][0]!r}). Linear layers in this model "
                                     f"are named: {', '.join(linear_names)}.")
            close = difflib.get_close_matches(target.rsplit(".", 1)[-1], leaf_names(model), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InjectionError(
                f"target module {target!r} matches no module of {type(model).__name__}.{hint} "
                f"Linear layers in this model are named: {', '.join(linear_names)}.")
    # In model order; a module named by two targets (say "q_proj" and "self_attn.q_proj") comes once.
    return [(path, m) for path, m in modules if any(matches(path, t) for t in target_names)]


def wrap_targets(model: nn.Module, targets: list[tuple[str, nn.Module]], make_wrapper: Callable[[nn.Module], Wrapper],
                 wrapper_type: type[Wrapper], wrappable: Callable[[nn.Module], bool] = is_linear,
                 kinds: str = "linear layers: nn.Linear, NF4 and other frozen linear layers, GPT-2's Conv1D") -> list[str]:
    """Replace each target module in its parent by ``make_wrapper(module)``; return the wrapped paths.

    ``wrappable(module)`` says which modules the method can wrap (default: ``is_linear``), ``kinds`` names them for
    the error. Different methods may stack (LoRA inside a layer that an adapter wraps); the same method
    twice on one module may not. Checks every target before changing anything, so an
    error leaves the model untouched.
    """
    for path, module in targets:
        if isinstance(module, wrapper_type):
            raise InjectionError(
                f"{path} is already wrapped by {wrapper_type.__name__} ({wrapper_type.method_name}). "
                "Adding a method twice to one module would stack two copies. Was this cell run twice? "
                "Start again from a fresh base model (peftlab.load_base()) or remove the method first.")
        if not wrappable(module):
            names = sorted({p.rsplit(".", 1)[-1] for p, m in model.named_modules() if p and wrappable(m)})
            raise InjectionError(
                f"{path} is a {type(module).__name__}, which {wrapper_type.method_name} cannot wrap (it wraps {kinds}). "
                f"Name layers of that kind instead: {', '.join(names)}.")
    for path, module in targets:
        set_submodule(model, path, make_wrapper(module))
    return [path for path, _ in targets]


def set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def wrappers(model: nn.Module, wrapper_type: type = Wrapper) -> Iterator[tuple[str, Wrapper]]:
    for path, m in model.named_modules():
        if isinstance(m, wrapper_type):
            yield path, m


def required_wrappers(model: nn.Module, wrapper_type: type, how_to_add: str) -> list[tuple[str, Wrapper]]:
    """The model's wrappers of one method, or an error saying how to add that method."""
    found = list(wrappers(model, wrapper_type))
    if not found:
        raise ValueError(f"this model has no {wrapper_type.method_name} layers; add them with {how_to_add}")
    return found


@contextlib.contextmanager
def wrappers_disabled(layers: list[Wrapper]):
    """Set ``disabled`` on each wrapper inside a ``with`` block; on leaving it (even on error) each is
    as it was before, so blocks nest: an inner block does not switch back on what an outer one switched off."""
    before = [layer.disabled for layer in layers]
    for layer in layers:
        layer.disabled = True
    try:
        yield
    finally:
        for layer, was_disabled in zip(layers, before):
            layer.disabled = was_disabled


def unwrap_at(model: nn.Module, path: str) -> None:
    """Put the wrapper at ``path``'s ``base_layer`` back in its place."""
    set_submodule(model, path, model.get_submodule(path).base_layer)


def unwrap(model: nn.Module, wrapper_type: type = Wrapper) -> list[str]:
    """Put every ``base_layer`` back in place of its wrapper; return the paths restored."""
    paths = [path for path, _ in wrappers(model, wrapper_type)]
    for path in paths:
        unwrap_at(model, path)
    return paths


def forget(model: nn.Module, *attributes: str) -> None:
    """Remove what a method stored on the model (``peftlab_lora_config``, hooks, ...) when the method goes."""
    for name in attributes:
        if hasattr(model, name):
            delattr(model, name)


def freeze_except(model: nn.Module, is_trainable: Callable[[str], bool]) -> None:
    """requires_grad = is_trainable(parameter name), for every parameter of the model."""
    for name, p in model.named_parameters():
        p.requires_grad_(is_trainable(name))


def count_parameters(model: nn.Module) -> dict:
    """Trainable and total parameter counts (each shared tensor counted once).

    The weights of FrozenLinear layers (say, 4-bit ones, stored as buffers) count as frozen parameters.
    """
    params = {id(p): p for p in model.parameters()}.values()
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    total += sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, FrozenLinear))
    return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / total}
