"""The code a chapter builds inline computes what the package and the production library compute.

Like LLMs-from-scratch's tests: pull a class definition out of the notebook (by AST, not by
running the notebook), then compare it on a tiny random model, so prose code and package
code cannot drift apart unnoticed.
"""

import ast
import copy
import json
import math
from pathlib import Path

import torch
from torch import nn

from conftest import randomize_lora_B
from peftlab import lora
from peftlab.production import add_lora_peft

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_definition(notebook: str, name: str, namespace: dict) -> object:
    """Execute the one top-level class or function `name` defined in a notebook's code cells."""
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]))
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
                exec(compile(ast.Module(body=[node], type_ignores=[]), notebook, "exec"), namespace)
                return namespace[name]
    raise AssertionError(f"{notebook} defines no {name}")


def test_chapter01_lora_linear_matches_package_and_peft(make_tiny, tokens):
    NotebookLoRA = notebook_definition("01_lora.ipynb", "LoRALinear", {"nn": nn, "torch": torch, "math": math})
    base = make_tiny()
    config = lora.LoraConfig(r=4, alpha=8, target_modules=("q_proj", "v_proj"))

    package = copy.deepcopy(base)
    lora.add_lora(package, config)
    randomize_lora_B(package)
    production = add_lora_peft(copy.deepcopy(base), config)
    inline = copy.deepcopy(base)
    for path, layer in lora.lora_layers(package):
        parent, _, child = path.rpartition(".")
        wrapped = NotebookLoRA(copy.deepcopy(layer.base_layer), r=config.r, alpha=config.alpha)
        wrapped.lora_A.weight.data.copy_(layer.lora_A.weight)
        wrapped.lora_B.weight.data.copy_(layer.lora_B.weight)
        setattr(inline.get_submodule(parent), child, wrapped)
        peft_layer = production.base_model.model.get_submodule(path)
        peft_layer.lora_A["default"].weight.data.copy_(layer.lora_A.weight)
        peft_layer.lora_B["default"].weight.data.copy_(layer.lora_B.weight)

    with torch.no_grad():
        expected = package(tokens).logits
        torch.testing.assert_close(inline(tokens).logits, expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(production(tokens).logits, expected, atol=1e-5, rtol=0)
        for module in inline.modules():
            if isinstance(module, NotebookLoRA):
                module.merge()
        torch.testing.assert_close(inline(tokens).logits, expected, atol=1e-5, rtol=0)


def test_chapter02_bottleneck_matches_package():
    NotebookBottleneck = notebook_definition("02_adapters.ipynb", "Bottleneck", {"nn": nn, "torch": torch})
    from peftlab.bottleneck import AdapterConfig, Bottleneck

    torch.manual_seed(0)
    inline = NotebookBottleneck(32, 4)
    package = Bottleneck(32, AdapterConfig("houlsby", reduction_factor=8))
    package.load_state_dict(inline.state_dict())
    h = torch.randn(2, 3, 32)
    torch.testing.assert_close(inline(h), package(h), atol=0, rtol=0)
