"""One vocabulary across methods: every wrapper has ``disabled``; every method's ``disable_<method>(model)``
is a context manager that computes the base model inside and leaves every wrapper as it found it
(blocks nest); no function takes a config instance as its default; a method forgets what it stored."""

import copy
import dataclasses
import importlib
import inspect
import pkgutil

import pytest
import torch

import peftlab
from peftlab.core.inject import Wrapper, wrappers
from peftlab.methods import bottleneck, ia3, lora, prompt


def add_and_randomize(method, model):
    """Add ``method`` and move its parameters off their identity start, so that on and off differ."""
    {"LoRA": lambda: lora.add_lora(model, lora.LoraConfig(target_modules=peftlab.ALL_LINEAR)),
     "IA3": lambda: ia3.add_ia3(model),
     "adapters": lambda: bottleneck.add_adapter(model, "a"),
     "prompt tuning": lambda: prompt.add_prompt(model, prompt.PromptTuningConfig(4, init="random"))}[method]()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


DISABLE = {"LoRA": lora.disable_lora, "IA3": ia3.disable_ia3, "adapters": bottleneck.disable_adapters,
           "prompt tuning": prompt.disable_prompt}


@pytest.mark.parametrize("method", DISABLE)
def test_disable_computes_the_base_and_nested_blocks_leave_it_off(method, make_tiny, tokens):
    base = make_tiny()
    model = copy.deepcopy(base)
    add_and_randomize(method, model)
    with torch.no_grad():
        expected, adapted = base(tokens).logits, model(tokens).logits
        assert not torch.allclose(adapted, expected)
        with DISABLE[method](model) as same:
            assert same is model
            torch.testing.assert_close(model(tokens).logits, expected, atol=1e-6, rtol=0)
            with DISABLE[method](model):
                pass
            # leaving the inner block must not switch the method back on inside the outer one
            torch.testing.assert_close(model(tokens).logits, expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(model(tokens).logits, adapted, atol=0, rtol=0)
    assert not any(layer.disabled for _, layer in wrappers(model))


@pytest.mark.parametrize("method", DISABLE)
def test_disable_restores_the_state_even_after_an_error(method, make_tiny, tokens):
    model = make_tiny()
    add_and_randomize(method, model)
    with pytest.raises(KeyError):
        with DISABLE[method](model):
            raise KeyError("inside the block")
    assert not any(layer.disabled for _, layer in wrappers(model))


def test_every_wrapper_class_starts_enabled(make_tiny):
    found = set()
    for method in DISABLE:
        model = make_tiny()
        add_and_randomize(method, model)
        assert all(layer.disabled is False for _, layer in wrappers(model)), method
        found |= {type(layer) for _, layer in wrappers(model)}
    assert len(found) == 4 and all(issubclass(t, Wrapper) for t in found)


def all_package_functions():
    for info in pkgutil.walk_packages(peftlab.__path__, "peftlab."):
        if info.name.endswith("__main__"):  # importing it runs the command line
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isfunction(obj) and obj.__module__ == module.__name__:
                yield f"{module.__name__}.{name}", obj
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                for attr, fn in vars(obj).items():
                    if inspect.isfunction(fn):
                        yield f"{module.__name__}.{name}.{attr}", fn


def test_no_function_takes_a_config_instance_as_its_default():
    """A default instance is made once and shared by every call (and stored on every model built with it)."""
    functions = dict(all_package_functions())
    assert "peftlab.methods.lora.add_lora" in functions and "peftlab.course.train.train" in functions
    shared = [name for name, fn in functions.items() for p in inspect.signature(fn).parameters.values()
              if dataclasses.is_dataclass(p.default) and not isinstance(p.default, type)]
    assert not shared, f"config instances as default arguments: {shared}"


def test_models_built_with_the_defaults_do_not_share_a_config(make_tiny):
    first, second = make_tiny(), make_tiny()
    lora.add_lora(first)
    lora.add_lora(second)
    assert first.peftlab_lora_config == second.peftlab_lora_config
    assert first.peftlab_lora_config is not second.peftlab_lora_config


@pytest.mark.parametrize("method, remove, stored", [
    ("LoRA", lora.remove_lora, ["peftlab_lora_config"]),
    ("IA3", ia3.remove_ia3, ["peftlab_ia3_config"]),
    ("adapters", bottleneck.remove_adapters, ["peftlab_adapter_configs"]),
    ("prompt tuning", prompt.remove_prompt, ["peftlab_prompt_config", "peftlab_prompt_hooks"])])
def test_removing_a_method_forgets_what_it_stored(method, remove, stored, make_tiny, tokens):
    base = make_tiny()
    model = copy.deepcopy(base)
    add_and_randomize(method, model)
    assert all(hasattr(model, name) for name in stored)
    remove(model)
    assert not any(hasattr(model, name) for name in stored)
    assert not list(wrappers(model))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, base(tokens).logits, atol=0, rtol=0)
