"""Bridges to the production libraries: the course's configs, applied through peft, AdapterHub ``adapters`` and
bitsandbytes, so a notebook can run both with one switch and the tests can compare them weight for weight.

    model = apply_lora(model, LoraConfig(r=8), backend="scratch")   # peftlab.methods.lora, from scratch
    model = apply_lora(model, LoraConfig(r=8), backend="peft")      # huggingface peft

One builder per production config: ``to_peft_lora_config`` (peft's LoRA, used here and by the recipe in
``finetune.py``) and ``nf4_quantization_config`` (bitsandbytes' NF4, used by ``load_base_4bit`` and the recipe).
"""


from __future__ import annotations

import torch
from torch import nn

from peftlab.core.inject import find_targets
from peftlab.course.model import load_base
from peftlab.methods import bottleneck, ia3, lora, nf4, prompt

BACKENDS = ("scratch", "peft")


def to_peft_lora_config(config: lora.LoraConfig, use_dora: bool = False):
    """peft's LoraConfig with the course's numbers: the one place the two are translated."""
    import peft

    return peft.LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                           target_modules=lora.peft_target_modules(config), use_rslora=config.use_rslora,
                           use_dora=use_dora, bias="none", task_type="CAUSAL_LM")


def nf4_quantization_config(compute_dtype: torch.dtype, double_quant: bool = True):
    """transformers' BitsAndBytesConfig for the QLoRA paper's storage: NF4, double quantization, computing in
    ``compute_dtype``."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=compute_dtype)


def add_lora_peft(model: nn.Module, config: lora.LoraConfig | None = None, use_dora: bool = False):
    """``peft.get_peft_model`` with the same rank, scaling, dropout and targets as peftlab's LoRA
    (``config`` None: LoraConfig's defaults).

    peft would silently accept a target list in which some names match nothing; peftlab's
    own target check runs first so both backends refuse the same mistakes.
    """
    import peft

    config = config if config is not None else lora.LoraConfig()
    find_targets(model, config.target_modules)
    if isinstance(model, peft.PeftModel):
        raise ValueError("this model is already a peft PeftModel; start again from a fresh base model "
                         "(peftlab.load_base()) instead of adding LoRA a second time")
    return peft.get_peft_model(model, to_peft_lora_config(config, use_dora))


def add_lora_variant_peft(model: nn.Module, config: lora.LoraConfig | None = None, use_dora: bool = False):
    """peft's LoRA with its variants switched on: DoRA (``use_dora``; Liu et al. 2024) and rsLoRA
    (``config.use_rslora``). These have no scratch version in peftlab; the course measures them through peft."""
    return add_lora_peft(model, config, use_dora=use_dora)


def apply_lora(model: nn.Module, config: lora.LoraConfig | None = None, backend: str = "scratch"):
    """Add LoRA with either backend; returns the model to train (a PeftModel for peft)."""
    config = config if config is not None else lora.LoraConfig()
    if backend == "scratch":
        lora.add_lora(model, config)
        return model
    if backend == "peft":
        return add_lora_peft(model, config)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def copy_lora_weights(source: nn.Module, target: nn.Module) -> None:
    """Give ``target`` the LoRA weights of ``source``; each may be scratch or peft."""
    state = lora_weights(source)
    loaded = 0
    for name, param in target.named_parameters():
        key = _canonical_lora_key(name)
        if key is not None:
            if key not in state:
                raise KeyError(f"{name}: no LoRA tensor {key} in the source model")
            param.data.copy_(state[key])
            loaded += 1
    if loaded != len(state):
        raise ValueError(f"copied {loaded} LoRA tensors but the source has {len(state)}")


def lora_weights(model: nn.Module) -> dict:
    """LoRA tensors by ``<module path>.lora_A`` / ``.lora_B``, for a scratch or a peft model."""
    out = {}
    for name, param in model.named_parameters():
        key = _canonical_lora_key(name)
        if key is not None:
            out[key] = param.detach()
    return out


def _canonical_lora_key(name: str) -> str | None:
    # scratch: model.layers.0.self_attn.q_proj.lora_A.weight
    # peft:    base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight
    if ".lora_A." not in name and ".lora_B." not in name:
        return None
    name = name.removeprefix("base_model.model.")
    return name.replace(".default.weight", ".weight")


def add_ia3_peft(model: nn.Module, config: ia3.IA3Config | None = None):
    """``peft.get_peft_model`` with an ``IA3Config`` of the same targets and feed-forward modules."""
    import peft

    config = config if config is not None else ia3.IA3Config()
    find_targets(model, config.target_modules)
    return peft.get_peft_model(model, peft.IA3Config(target_modules=list(config.target_modules),
                                                     feedforward_modules=list(config.feedforward_modules),
                                                     task_type="CAUSAL_LM"))


def _adapterhub_bottleneck(config):
    """AdapterHub's config for peftlab's AdapterConfig: DoubleSeqBnConfig (houlsby) or SeqBnConfig (pfeiffer)."""
    import adapters

    return {"houlsby": adapters.DoubleSeqBnConfig, "pfeiffer": adapters.SeqBnConfig}[config.placement](
        reduction_factor=config.reduction_factor, non_linearity=config.non_linearity)


def add_adapter_adapterhub(model: nn.Module, name: str, config: bottleneck.AdapterConfig | None = None):
    """The same bottleneck adapter through AdapterHub ``adapters``: DoubleSeqBnConfig (houlsby) or SeqBnConfig (pfeiffer).

    Changes ``model`` in place (``adapters.init``), activates the adapter and freezes the rest.
    Note: with transformers 4.57 AdapterHub's Llama layers do not fill the KV cache, so
    generate with ``use_cache=False`` (docs/testing.md, Known differences).
    """
    config = config if config is not None else bottleneck.AdapterConfig()
    return _add_adapterhub(model, name, _adapterhub_bottleneck(config))


def _add_adapterhub(model: nn.Module, name: str, hub_config):
    """``adapters.init`` (once), add the adapter, activate it and freeze the rest."""
    import adapters

    device = next(model.parameters()).device
    if not hasattr(model, "adapters_config"):
        adapters.init(model)
    model.add_adapter(name, config=hub_config)
    for module in model.modules():  # AdapterHub builds new adapters on the CPU: put them beside the model's weights
        if any(p.device != device for p in module.parameters(recurse=False)):
            module.to(device)
    model.train_adapter(name)
    return model


# AdapterHub keeps a layer's adapters under <decoder layer path>.attention_adapters (after attention) or
# .output_adapters (after the MLP, Houlsby's second and Pfeiffer's only adapter).
ADAPTERHUB_BLOCKS = dict(zip(bottleneck.HOULSBY_TARGETS, ("attention_adapters", "output_adapters")))


def _adapterhub_prefix(path: str, name: str) -> str:
    """Where AdapterHub keeps the adapter that peftlab holds at ``path``."""
    for target, block in ADAPTERHUB_BLOCKS.items():
        if path.endswith("." + target):  # Houlsby: the adapter follows a block inside the decoder layer
            return f"{path.removesuffix('.' + target)}.{block}.adapters.{name}"
    return f"{path}.output_adapters.adapters.{name}"  # Pfeiffer: the slot is the decoder layer itself


def copy_adapter_weights(scratch: nn.Module, hub: nn.Module, name: str) -> None:
    """Give the AdapterHub model the weights of peftlab's adapter ``name`` (same placement)."""
    hub_params = dict(hub.named_parameters())
    copied = 0
    for path, slot in bottleneck.adapter_slots(scratch):
        if name not in slot.adapters:
            continue
        prefix = _adapterhub_prefix(path, name)
        for ours, theirs in (("down", "adapter_down.0"), ("up", "adapter_up")):
            for kind in ("weight", "bias"):
                hub_params[f"{prefix}.{theirs}.{kind}"].data.copy_(getattr(getattr(slot.adapters[name], ours), kind))
                copied += 1
    if copied == 0:
        raise ValueError(f"peftlab model has no adapter named {name!r}")


def add_prompt_peft(model: nn.Module, config: prompt.PromptTuningConfig | None = None):
    """``peft.get_peft_model`` with a ``PromptTuningConfig`` of the same length (random init; copy weights in)."""
    import peft

    config = config if config is not None else prompt.PromptTuningConfig()
    return peft.get_peft_model(model, peft.PromptTuningConfig(task_type="CAUSAL_LM",
                                                              num_virtual_tokens=config.num_virtual_tokens,
                                                              prompt_tuning_init="RANDOM"))


def peft_prompt_weight(model) -> torch.nn.Parameter:
    """The soft-prompt embedding matrix of a peft prompt-tuning model, shape (n, d)."""
    return model.prompt_encoder["default"].embedding.weight


def avoid_bitsandbytes_cpu_eval_trap(model: nn.Module) -> int:
    """Keep bitsandbytes from repacking 4-bit weights on an AVX512-BF16 CPU at the first no-grad pass.

    On such CPUs, after that repacking the backward pass no longer flows through the 4-bit layers
    (measured: the LoRA gradient shrinks to a few percent of its true size); the only sign is a
    warning. Turning the fast path off on every Linear4bit avoids it.
    Returns the number of layers changed.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def check_bitsandbytes_cpu_dequantization(model: nn.Module) -> int:
    """Refuse, in one line naming the layer, a 4-bit model that bitsandbytes would dequantize wrongly on this CPU.

    bitsandbytes 0.50's native CPU dequantization has an AVX-512 branch (``csrc/cpu_ops.cpp``,
    ``dequantizeBlockwise4bitCpu``: taken when the CPU itself reports AVX-512F, a row's length is a multiple of 16 and
    the block size at least 16) that looks each block's scale up as if every row began a new block of 64. Where a
    row's length is not a multiple of 64 (a 32-wide GPT-2, say) the weights it returns are wrong by up to the
    largest weight, and training and inference run on them without a word. The CPU picks the branch, not PyTorch's
    settings, so each distinct weight shape is checked here on this machine: a random matrix of that shape
    quantized by bitsandbytes, dequantized by bitsandbytes and by peftlab's NF4 (the same format, from scratch).
    NF4 layers on the CPU only (a GPU takes CUDA kernels). Returns the number of shapes checked.
    """
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnb_f

    checked: set[tuple] = set()
    for name, layer in model.named_modules():
        if not isinstance(layer, bnb.nn.Linear4bit) or layer.weight.device.type != "cpu":
            continue
        state = layer.weight.quant_state
        key = (tuple(state.shape), state.blocksize, state.dtype)
        if state.quant_type != "nf4" or key in checked:
            continue
        checked.add(key)
        sample = torch.randn(state.shape, generator=torch.Generator().manual_seed(0)).to(state.dtype)
        packed, sample_state = bnb_f.quantize_4bit(sample, blocksize=state.blocksize, quant_type="nf4")
        theirs = bnb_f.dequantize_4bit(packed, sample_state).float()
        ours = nf4.dequantize_nf4(nf4.NF4Tensor(packed=packed, absmax=sample_state.absmax, shape=state.shape,
                                                dtype=torch.float32, blocksize=state.blocksize))
        if not torch.allclose(theirs, ours.to(state.dtype).float(), rtol=1e-2, atol=1e-6):  # 1e-2: bf16 rounding
            rows, width = state.shape
            raise ValueError(
                f"bitsandbytes {bnb.__version__} dequantizes {name} (a {rows}x{width} 4-bit weight) wrongly on this "
                f"CPU: its AVX-512 code assumes each row of {width} values starts a new block of {state.blocksize}; "
                f"run on a GPU, use a model whose layer widths are multiples of {state.blocksize}, or use peftlab's "
                f"scratch QLoRA (peftlab.methods.qlora), which is right on every CPU")
    return len(checked)


def load_base_4bit(name_or_path=None, double_quant: bool = True):
    """The base model loaded through transformers + bitsandbytes in NF4 (fp32 compute on the CPU).
    Refused where bitsandbytes would dequantize its layers wrongly (:func:`check_bitsandbytes_cpu_dequantization`)."""
    model, tokenizer = load_base(name_or_path, quantization_config=nf4_quantization_config(torch.float32, double_quant))
    check_bitsandbytes_cpu_dequantization(model)
    avoid_bitsandbytes_cpu_eval_trap(model)
    return model, tokenizer


def add_adapter_and_lora_adapterhub(model: nn.Module, name: str, adapter_config, lora_config):
    """AdapterHub's ConfigUnion of a LoRA (on q and v) and a bottleneck adapter, activated for training."""
    import adapters

    if set(lora_config.target_modules) != {"q_proj", "v_proj"} or lora_config.use_rslora or lora_config.dropout:
        raise ValueError("AdapterHub's LoRA here is the q,v form without rsLoRA or dropout; use target_modules=('q_proj', 'v_proj')")
    union = adapters.ConfigUnion(adapters.LoRAConfig(r=lora_config.r, alpha=lora_config.alpha, attn_matrices=["q", "v"]),
                                 _adapterhub_bottleneck(adapter_config))
    return _add_adapterhub(model, name, union)


def copy_hybrid_weights_to_adapterhub(scratch: nn.Module, hub: nn.Module, name: str) -> None:
    """Copy peftlab's adapter ``name`` and its LoRA (q, v) into an AdapterHub ConfigUnion model."""
    copy_adapter_weights(scratch, hub, name)
    hub_params = dict(hub.named_parameters())
    for path, layer in lora.lora_layers(scratch):
        hub_path = path.replace(".base_layer.", ".")
        hub_params[f"{hub_path}.loras.{name}.lora_A"].data.copy_(layer.lora_A.weight)
        hub_params[f"{hub_path}.loras.{name}.lora_B"].data.copy_(layer.lora_B.weight)
