"""One experiment = a fresh base model + one method + training on one task + evaluation.

    result = run("lora", "addition", steps=200, lr=3e-3, seed=0)
    result["accuracy"], result["trainable"], result["train_seconds"], result["losses"]

The chapters of the course compare methods, learning rates, ranks and seeds with this one
function, so every number in a table comes from the same recipe. ``run`` trains for a fixed
number of steps (a short run, to watch); ``run_to_convergence`` trains until the validation loss
stops improving and scores the test split (to compare methods where they end). ``METHODS`` names what can
be run, each with the options it takes; ``apply_method`` applies one to a model and refuses an option it does not take.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Callable

import torch

from peftlab.core.inject import ALL_LINEAR, count_parameters
from peftlab.course.model import load_base
from peftlab.course.tasks import load_task
from peftlab.course.train import TrainConfig, evaluate, train
from peftlab.methods import bottleneck, hybrid, ia3, lora, prompt, qlora
from peftlab.methods.names import (ADAPTER_AND_LORA, ADAPTER_HOULSBY, ADAPTER_PFEIFFER, DORA_PEFT, FULL_FINE_TUNING, IA3, LORA,
                                   LORA_PEFT, LORA_QV, PROMPT_AND_LORA, PROMPT_TUNING, QLORA, QLORA_BASE_AND_ADAPTER,
                                   RSLORA_PEFT)


# Every method the experiments can run, each with its arguments spelled out: a keyword a method does not take is an
# error naming the method and what it takes (run("QLoRA", ..., alpha=16) once trained with alpha 2r, without a word).


def _full(model, tokenizer):
    for p in model.parameters():
        p.requires_grad_(True)


def _lora(model, tokenizer, *, r=8, alpha=None, targets=ALL_LINEAR, use_rslora=False):
    """Scratch LoRA; alpha None: 2r, the course's default."""
    lora.add_lora(model, lora.LoraConfig(r=r, alpha=alpha if alpha is not None else 2 * r, target_modules=targets,
                                         use_rslora=use_rslora))


def _lora_qv(model, tokenizer, *, r=8, alpha=None, use_rslora=False):
    _lora(model, tokenizer, r=r, alpha=alpha, targets=("q_proj", "v_proj"), use_rslora=use_rslora)


def _peft_lora(model, tokenizer, *, r=8, alpha=None, targets=ALL_LINEAR, use_rslora=False, use_dora=False):
    """peft's own LoRA, for its variants: DoRA (``use_dora``) and rsLoRA (``use_rslora``)."""
    from peftlab.production import add_lora_variant_peft

    return add_lora_variant_peft(model, lora.LoraConfig(r=r, alpha=alpha if alpha is not None else 2 * r,
                                                        target_modules=targets, use_rslora=use_rslora),
                                 use_dora=use_dora)


def _dora(model, tokenizer, *, r=8, alpha=None, targets=ALL_LINEAR):
    return _peft_lora(model, tokenizer, r=r, alpha=alpha, targets=targets, use_dora=True)


def _rslora(model, tokenizer, *, r=8, alpha=None, targets=ALL_LINEAR):
    return _peft_lora(model, tokenizer, r=r, alpha=alpha, targets=targets, use_rslora=True)


def _ia3(model, tokenizer, *, target_modules=None, feedforward_modules=None):
    """IA3 with peft's targets for the architecture (``ia3.IA3_DEFAULTS``) unless both are given."""
    if (target_modules is None) != (feedforward_modules is None):
        raise ValueError("IA3: give both target_modules and feedforward_modules, or neither (the defaults)")
    ia3.add_ia3(model, None if target_modules is None else ia3.IA3Config(target_modules, feedforward_modules))


def _adapter(kind: str):
    def apply(model, tokenizer, *, reduction_factor=16):
        bottleneck.add_adapter(model, "task", bottleneck.AdapterConfig(kind, reduction_factor=reduction_factor))
    return apply


def _prompt(model, tokenizer, *, n=16, init="vocab", init_text=None):
    prompt.add_prompt(model, prompt.PromptTuningConfig(n, init=init, init_text=init_text), tokenizer=tokenizer)


def _qlora(model, tokenizer, *, r=8, alpha=None, targets=ALL_LINEAR):
    qlora.add_qlora(model, lora.LoraConfig(r=r, alpha=alpha if alpha is not None else 2 * r, target_modules=targets))


def _prompt_and_lora(model, tokenizer, *, n=16):
    hybrid.add_prompt_and_lora(model, prompt.PromptTuningConfig(n), lora.LoraConfig(target_modules=("q_proj", "v_proj")),
                               tokenizer=tokenizer)


def _adapter_and_lora(model, tokenizer):
    hybrid.add_adapter_and_lora(model, "task", bottleneck.AdapterConfig("pfeiffer"),
                                lora.LoraConfig(target_modules=("q_proj", "v_proj")))


def _qlora_base_and_adapter(model, tokenizer):
    hybrid.add_qlora_base_and_adapter(model, "task", bottleneck.AdapterConfig("houlsby"))


@dataclass(frozen=True)
class Method:
    """One entry of the registry: how to apply the method to a fresh model, and its default learning rate.

    ``apply(model, tokenizer, **options)`` changes the model in place, or returns the model to train instead (peft
    wraps it in a PeftModel); ``apply_method`` hides that difference."""

    apply: Callable
    lr: float

    def options(self) -> list[str]:
        """The keyword arguments the method takes."""
        return [name for name, p in inspect.signature(self.apply).parameters.items() if p.kind is p.KEYWORD_ONLY]


METHODS: dict[str, Method] = {
    FULL_FINE_TUNING: Method(_full, 1e-3),
    LORA: Method(_lora, 3e-3),
    LORA_QV: Method(_lora_qv, 3e-3),
    IA3: Method(_ia3, 3e-2),
    ADAPTER_HOULSBY: Method(_adapter("houlsby"), 3e-3),
    ADAPTER_PFEIFFER: Method(_adapter("pfeiffer"), 3e-3),
    LORA_PEFT: Method(_peft_lora, 3e-3),
    DORA_PEFT: Method(_dora, 3e-3),
    RSLORA_PEFT: Method(_rslora, 3e-3),
    PROMPT_TUNING: Method(_prompt, 1e-1),
    QLORA: Method(_qlora, 3e-3),
    PROMPT_AND_LORA: Method(_prompt_and_lora, 3e-3),
    ADAPTER_AND_LORA: Method(_adapter_and_lora, 3e-3),
    QLORA_BASE_AND_ADAPTER: Method(_qlora_base_and_adapter, 3e-3),
}


def apply_method(method: str, model, tokenizer, **options):
    """``model`` with ``method`` applied (the model itself, or peft's PeftModel around it).

    An unknown method, or an option the method does not take, is a ValueError that names what it takes."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    entry = METHODS[method]
    unknown = sorted(set(options) - set(entry.options()))
    if unknown:
        takes = ", ".join(entry.options()) or "no options"
        raise ValueError(f"{method} does not take {', '.join(unknown)}; it takes {takes}")
    applied = entry.apply(model, tokenizer, **options)
    return applied if isinstance(applied, torch.nn.Module) else model


def _with_method(method: str, seed: int, model, tokenizer, method_kwargs: dict, device=None):
    """``(model, tokenizer, default lr)``: ``method`` applied to ``model`` (None: a fresh base model on ``device``,
    None: the course's), seeded."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if model is None:
        model, tokenizer = load_base(device=device)
    torch.manual_seed(seed)  # the method's random initialisation
    return apply_method(method, model, tokenizer, **method_kwargs), tokenizer, METHODS[method].lr


def run(method: str, task: str, steps: int = 300, lr: float | None = None, seed: int = 0, batch_size: int = 32,
        eval_limit: int = 200, model=None, tokenizer=None, **method_kwargs) -> dict:
    """Apply ``method`` to a fresh base model (or to ``model``), train on ``task``, evaluate on validation.

    Returns accuracy and loss on the validation split, trainable parameters, training time,
    the per-step losses, and the trained model (key ``model``) for further use.
    """
    model, tokenizer, default_lr = _with_method(method, seed, model, tokenizer, method_kwargs)
    params = count_parameters(model)
    start = time.perf_counter()
    losses = train(model, tokenizer, load_task(task, "train"),
                   TrainConfig(steps=steps, lr=lr or default_lr, batch_size=batch_size, seed=seed, progress=False))
    seconds = time.perf_counter() - start
    result = evaluate(model, tokenizer, load_task(task, "validation", limit=eval_limit))
    return {"method": method, "task": task, "lr": lr or default_lr, "seed": seed, "steps": steps,
            "accuracy": result["accuracy"], "loss": result["loss"], "trainable": params["trainable"],
            "total": params["total"], "train_seconds": seconds, "losses": losses, "model": model}


def run_to_convergence(method: str, task: str, lr: float | None = None, seed: int = 0, batch_size: int = 32,
                       eval_every: int = 100, patience: int = 5, max_steps: int = 5000, device: str | None = None,
                       **method_kwargs) -> dict:
    """Train until the validation loss stops improving, then score the best checkpoint on the test split.

    Every ``eval_every`` steps the loss and exact match on the whole validation split are measured;
    training stops once the loss has not improved for ``patience`` evaluations in a row (or at
    ``max_steps``), and the trained parameters go back to their best evaluation before the test
    split is scored. So a method is judged where it ends, not by how fast it leaves the start, and
    choosing a learning rate on validation never looks at the test split.

    Returns the validation curve, the training loss averaged over each interval, the best step, the
    best validation loss and accuracy, the test loss and accuracy, trainable parameters and time.
    """
    if eval_every < 1 or patience < 1 or max_steps < eval_every:
        raise ValueError(f"need eval_every >= 1, patience >= 1 and max_steps >= eval_every; got {eval_every}, "
                         f"{patience}, {max_steps}")
    model, tokenizer, default_lr = _with_method(method, seed, None, None, method_kwargs, device)
    lr = lr or default_lr
    params = count_parameters(model)
    validation = load_task(task, "validation")
    curve = [{"step": 0, **evaluate(model, tokenizer, validation)}]
    best = {**curve[0], "state": _trained_state(model)}

    def evaluate_and_maybe_stop(step: int, m) -> bool:
        if step % eval_every:
            return False
        curve.append({"step": step, **evaluate(m, tokenizer, validation)})
        if curve[-1]["loss"] < best["loss"]:
            best.update(curve[-1], state=_trained_state(m))
        return step - best["step"] >= patience * eval_every

    start = time.perf_counter()
    losses = train(model, tokenizer, load_task(task, "train"),
                   TrainConfig(steps=max_steps, lr=lr, batch_size=batch_size, seed=seed, progress=False),
                   callback=evaluate_and_maybe_stop)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in best["state"]:
                p.copy_(best["state"][name])
    test = evaluate(model, tokenizer, load_task(task, "test"))
    train_curve = [sum(losses[i:i + eval_every]) / len(losses[i:i + eval_every]) for i in range(0, len(losses), eval_every)]
    return {"method": method, "task": task, "lr": lr, "seed": seed, "batch_size": batch_size,
            "method_kwargs": method_kwargs, "max_steps": max_steps, "steps_run": len(losses), "stopped_early": len(losses) < max_steps,
            "best_step": best["step"], "val_loss": best["loss"], "val_accuracy": best["accuracy"],
            "test_loss": test["loss"], "test_accuracy": test["accuracy"], "trainable": params["trainable"],
            "train_seconds": seconds, "curve": curve, "train_loss_per_interval": train_curve}


def _trained_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
