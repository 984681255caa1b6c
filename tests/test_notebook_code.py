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

from peftlab.methods import lora
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


def test_chapter01_lora_linear_matches_package_and_peft(make_tiny, tokens, randomize_lora_B):
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
    from peftlab.methods.bottleneck import AdapterConfig, Bottleneck

    torch.manual_seed(0)
    inline = NotebookBottleneck(32, 4)
    package = Bottleneck(32, AdapterConfig("houlsby", reduction_factor=8))
    package.load_state_dict(inline.state_dict())
    h = torch.randn(2, 3, 32)
    torch.testing.assert_close(inline(h), package(h), atol=0, rtol=0)


def test_chapter03_prompted_forward_matches_package_and_peft(make_tiny, tokens):
    prompted_forward = notebook_definition("03_soft_prompts.ipynb", "prompted_forward", {"torch": torch})
    from peftlab.methods import prompt
    from peftlab.production import add_prompt_peft, peft_prompt_weight

    base = make_tiny()
    torch.manual_seed(0)
    soft = torch.randn(5, base.config.hidden_size) * 0.1
    package = copy.deepcopy(base)
    prompt.add_prompt(package, prompt.PromptTuningConfig(5, init="random"))
    production = add_prompt_peft(copy.deepcopy(base), prompt.PromptTuningConfig(5))
    mask = torch.ones_like(tokens)
    labels = tokens.clone()
    with torch.no_grad():
        prompt.soft_prompt_layer(package).prompt.copy_(soft)
        peft_prompt_weight(production).copy_(soft)
        loss, logits = prompted_forward(base, soft, tokens, mask, labels)
        expected = package(input_ids=tokens, attention_mask=mask, labels=labels)
        theirs = production(input_ids=tokens, attention_mask=mask, labels=labels)
    torch.testing.assert_close(logits, expected.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, theirs.logits[:, 5:], atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, expected.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, theirs.loss, atol=1e-5, rtol=0)


def test_chapter04_nf4_levels_and_block_match_package_and_bitsandbytes():
    nf4_levels = notebook_definition("04_qlora.ipynb", "nf4_levels", {"torch": torch})
    quantize_block = notebook_definition("04_qlora.ipynb", "quantize_block", {"torch": torch})
    import bitsandbytes.functional as bnb_functional

    from peftlab.methods import nf4

    levels = nf4_levels()
    assert torch.equal(levels, nf4.nf4_codebook())
    assert torch.equal(levels, bnb_functional.get_4bit_type("nf4", device="cpu").sort().values)
    torch.manual_seed(0)
    block = torch.randn(64)
    _, _, restored = quantize_block(block, levels)
    torch.testing.assert_close(restored, nf4.quantize_dequantize(block, "NF4", 64), atol=1e-7, rtol=0)


def test_chapter05_ia3_linear_matches_package_and_peft(make_tiny, tokens):
    NotebookIA3 = notebook_definition("05_ia3.ipynb", "IA3Linear", {"nn": nn, "torch": torch})
    from peftlab.methods import ia3
    from peftlab.production import add_ia3_peft

    base = make_tiny()
    package, production, inline = copy.deepcopy(base), add_ia3_peft(copy.deepcopy(base)), copy.deepcopy(base)
    ia3.add_ia3(package)
    torch.manual_seed(0)
    with torch.no_grad():
        for path, layer in ia3.ia3_layers(package):
            layer.ia3_l.copy_(torch.rand_like(layer.ia3_l) + 0.5)
            parent, _, child = path.rpartition(".")
            wrapped = NotebookIA3(copy.deepcopy(layer.base_layer), scale_input=layer.is_feedforward)
            wrapped.ia3_l.copy_(layer.ia3_l)
            setattr(inline.get_submodule(parent), child, wrapped)
            production.base_model.model.get_submodule(path).ia3_l["default"].copy_(
                layer.ia3_l.view_as(production.base_model.model.get_submodule(path).ia3_l["default"]))
        expected = package(tokens).logits
        torch.testing.assert_close(inline(tokens).logits, expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(production(tokens).logits, expected, atol=1e-5, rtol=0)
