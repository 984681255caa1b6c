"""What the methods need to know about each transformers architecture, in one place (peft keeps the same tables
in ``peft/utils/constants.py``). A method reads these; it never tests a model's class or type itself.

- ``model_type(model)``: the ``config.model_type`` every table below is keyed by;
- ``IA3_DEFAULTS``: which layers IA3 scales, and which of them on their input;
- ``ADAPTER_PLACES``, ``LLAMA_LIKE`` and ``is_decoder_layer``: where bottleneck adapters go;
- ``TASK_TYPES`` and ``peft_task_type``: the task type peft records in adapter_config.json.
"""

from __future__ import annotations

from torch import nn


def model_type(model: nn.Module) -> str | None:
    """``model.config.model_type`` ("llama", "gpt2", ...), or None for a model without a transformers config."""
    return getattr(getattr(model, "config", None), "model_type", None)


# IA3: default (target_modules, feedforward_modules) per model type: peft's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING
# and ..._FEEDFORWARD_MODULES_MAPPING for the architectures of this course. Names match the end of a module's path, so
# BERT's "output.dense" is both the attention output's dense layer and the MLP's; peft scales both on their input, and
# so do we.
IA3_DEFAULTS = {
    "llama": (("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    "mistral": (("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    "qwen2": (("q_proj", "v_proj", "down_proj"), ("down_proj",)),
    "gemma": (("q_proj", "v_proj", "down_proj"), ("down_proj",)),
    "gpt2": (("c_attn", "mlp.c_proj"), ("mlp.c_proj",)),
    "bert": (("key", "value", "output.dense"), ("output.dense",)),
    # Not in peft's table (peft asks for target_modules): Phi-3 fuses q, k, v into qkv_proj, so the vector scales all
    # three; the MLP's down_proj is scaled on its input as in Llama. A peftlab choice, saved explicitly in the config.
    "phi3": (("qkv_proj", "down_proj"), ("down_proj",)),
}

# Bottleneck adapters: where they go, by model type, as AdapterHub places them (peftlab.methods.bottleneck's docstring).
# houlsby: module names (matched at the end of a path, as LoRA's targets are);
# pfeiffer: a regular expression over full module paths; renormalize: see bottleneck.AdapterSlot.
ADAPTER_PLACES = {
    "gpt2": {"houlsby": ("attn.resid_dropout", "mlp"), "pfeiffer": r"(.*\.)?h\.\d+", "renormalize": False},
    "bert": {"houlsby": ("attention.output.dropout", "output.dropout"), "pfeiffer": r"(.*\.)?layer\.\d+\.output\.LayerNorm",
             "renormalize": True},
}
# Decoders known to have Llama's block structure and names (an o_proj and an mlp in each decoder layer), where the
# adapters take Llama's places; any other model with that structure gets them too (bottleneck._targets).
LLAMA_LIKE = ("llama", "mistral", "qwen2", "gemma", "phi3")


def is_decoder_layer(module: nn.Module) -> bool:
    """A transformers decoder layer (``LlamaDecoderLayer``, ``Qwen2DecoderLayer``, ...), told by its class name."""
    return type(module).__name__.endswith("DecoderLayer")


# peft's task type for a transformers model, from the head its class name ends with. peft wraps the model in the
# matching PeftModel subclass; a "CAUSAL_LM" adapter fails to load into a model that cannot generate (BERT, say).
# GPT-2's causal LM class predates the naming scheme: GPT2LMHeadModel.
TASK_TYPES = {"ForCausalLM": "CAUSAL_LM", "LMHeadModel": "CAUSAL_LM", "ForSequenceClassification": "SEQ_CLS",
              "ForTokenClassification": "TOKEN_CLS", "ForQuestionAnswering": "QUESTION_ANS",
              "ForConditionalGeneration": "SEQ_2_SEQ_LM"}


def peft_task_type(model: nn.Module) -> str | None:
    """The ``task_type`` peft expects in adapter_config.json for ``model``; None for a model without a head
    (``BertModel``, ``LlamaModel``), which peft loads as a plain ``PeftModel``."""
    name = type(model).__name__
    found = [task for suffix, task in TASK_TYPES.items() if name.endswith(suffix)]
    if found == ["SEQ_2_SEQ_LM"] and not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return None  # a "ForConditionalGeneration" that is not an encoder-decoder (a vision-language model, say)
    return found[0] if found else None
