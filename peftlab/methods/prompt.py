"""Prompt tuning from scratch: Lester et al. 2021, "The Power of Scale for Parameter-Efficient
Prompt Tuning" (arXiv 2104.08691).

The model stays frozen, and so does its vocabulary. What is learned is a **soft prompt**:
``n`` vectors of the embedding width, prepended to the embedded input of every example::

    [p_1 ... p_n, e(x_1) ... e(x_L)]  ->  the frozen transformer

Trainable parameters: ``n x d`` (the paper's E x P). The attention mask gets ``n`` ones in
front and the labels ``n`` ignored positions (-100), exactly as peft does, so the loss is
the same; the logits of the ``n`` virtual positions are dropped from the output, so the
logits line up with the input tokens and the course's ``train``/``evaluate`` work unchanged.

Initialisation, as in the paper: ``"random"`` (uniform in [-0.5, 0.5]), ``"vocab"`` (embeddings
of tokens sampled from the vocabulary) or ``"text"`` (the embeddings of a text, repeated to length n).

Mechanics: the soft prompt lives in a wrapper around the model's input embedding
(``model.get_input_embeddings()``: ``embed_tokens`` in Llama, ``wte`` in GPT-2, ``word_embeddings`` in
BERT; wrapped by :mod:`peftlab.core.inject`, like every method). A hook before the model's forward
embeds ``input_ids`` through it and hands the model ``inputs_embeds`` of length ``n + L`` instead, as
peft does: the model then counts its positions over all ``n + L`` vectors itself, which matters for
learned absolute positions (GPT-2, BERT: the virtual tokens take positions 0..n-1, the text n..n+L-1).
The same hook extends the attention mask, the labels and, for BERT, ``token_type_ids`` (the virtual
tokens are segment 0; peft drops token_type_ids instead, so with segment-1 tokens the two differ).
A hook after the forward drops the ``n`` virtual positions from per-token outputs (``logits``, or
an encoder's ``last_hidden_state``), so they line up with the input tokens. Not trimmed: ``hidden_states``
and ``attentions`` if asked for, and BERT's ``pooler_output``, which BERT computes from the first
position -- with a prompt that is the first virtual token (as in peft).

``generate`` works with ``use_cache=False``: with a KV cache, transformers would feed only the newest
token and the prompt could not be prepended consistently, so the hook refuses a cache with a clear
error instead of a silent wrong answer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from peftlab.core.architectures import peft_task_type
from peftlab.core.checkpoint import check_tensors, load_folder, save_folder
from peftlab.core.inject import (InjectionError, Wrapper, count_parameters, find_targets, forget, freeze_except, unwrap,
                                 wrap_targets, wrappers_disabled)

INITS = ("random", "vocab", "text")


@dataclass
class PromptTuningConfig:
    num_virtual_tokens: int = 16      # Lester used 100; gains flatten past about 20 at every scale they tried
    init: str = "vocab"               # "random" | "vocab" | "text"; non-random starts win at small model scale
    init_text: str | None = None      # required for init="text"
    embedding_module: str | None = None  # None: the model's own input embedding, model.get_input_embeddings()

    def __post_init__(self):
        if isinstance(self.num_virtual_tokens, bool) or not isinstance(self.num_virtual_tokens, int) \
                or self.num_virtual_tokens < 1:
            raise ValueError(f"num_virtual_tokens must be a positive integer, got {self.num_virtual_tokens!r}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose one of {INITS}")
        if self.init == "text" and not self.init_text:
            raise ValueError("init='text' needs init_text, the words whose embeddings start the prompt")


class SoftPromptEmbedding(Wrapper):
    """The frozen input embedding, with ``n`` learned vectors put in front of every sequence."""

    method_name = "prompt tuning"

    def __init__(self, base_layer: nn.Embedding, num_virtual_tokens: int):
        super().__init__()
        self.base_layer = base_layer
        self.prompt = nn.Parameter(torch.zeros(num_virtual_tokens, base_layer.embedding_dim,
                                               device=base_layer.weight.device, dtype=base_layer.weight.dtype))

    @property
    def num_virtual_tokens(self) -> int:
        return self.prompt.shape[0]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embedded = self.base_layer(input_ids)
        if self.disabled:
            return embedded
        prompt = self.prompt.to(embedded.dtype).unsqueeze(0).expand(embedded.shape[0], -1, -1)
        return torch.cat([prompt, embedded], dim=1)


def _initial_prompt(embedding: nn.Embedding, config: PromptTuningConfig, tokenizer=None) -> torch.Tensor:
    n, d = config.num_virtual_tokens, embedding.embedding_dim
    weight = embedding.weight.detach()
    if config.init == "random":
        return torch.empty(n, d).uniform_(-0.5, 0.5)
    if config.init == "vocab":
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        candidates = torch.tensor([i for i in range(weight.shape[0]) if i not in special])
        return weight[candidates[torch.randint(len(candidates), (n,))]].clone()
    if tokenizer is None:
        raise ValueError("init='text' needs the tokenizer: add_prompt(model, config, tokenizer=tokenizer)")
    ids = tokenizer(config.init_text, add_special_tokens=False)["input_ids"]
    ids = (ids * (n // len(ids) + 1))[:n]  # repeat the text to fill n positions, as peft does
    return weight[torch.tensor(ids)].clone()


def _input_embedding(model: nn.Module, config: PromptTuningConfig) -> list[tuple[str, nn.Module]]:
    """``[(path, module)]`` of the input embedding: the one named in the config, or the model's own."""
    if config.embedding_module is not None:
        targets = find_targets(model, [config.embedding_module])
        if len(targets) != 1:
            raise ValueError(f"expected one input embedding named {config.embedding_module!r}, found {len(targets)}")
        return targets
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if get is not None else None
    if embedding is None:
        raise InjectionError(f"prompt tuning needs the model's input embedding, and {type(model).__name__} has no "
                             "get_input_embeddings(); name it: PromptTuningConfig(embedding_module='...')")
    return [(path, m) for path, m in model.named_modules() if m is embedding]


def add_prompt(model: nn.Module, config: PromptTuningConfig | None = None, tokenizer=None) -> dict:
    """Prepend a trainable soft prompt to every input of ``model``; freeze everything else.

    ``config``: a PromptTuningConfig (None: the defaults, 16 virtual tokens from the vocabulary)."""
    config = config if config is not None else PromptTuningConfig()
    targets = _input_embedding(model, config)
    max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_positions is not None and config.num_virtual_tokens >= max_positions:
        raise ValueError(f"a soft prompt of {config.num_virtual_tokens} tokens leaves no room in a context of "
                         f"{max_positions} positions; use fewer than {max_positions} virtual tokens")
    (path,) = wrap_targets(model, targets, lambda m: SoftPromptEmbedding(m, config.num_virtual_tokens),
                           SoftPromptEmbedding, wrappable=lambda m: isinstance(m, nn.Embedding),
                           kinds="an input embedding (nn.Embedding)")
    layer = soft_prompt_layer(model)
    with torch.no_grad():
        layer.prompt.copy_(_initial_prompt(layer.base_layer, config, tokenizer))
    model.peftlab_prompt_config = config
    model.peftlab_prompt_hooks = (model.register_forward_pre_hook(_extend_inputs, with_kwargs=True),
                                  model.register_forward_hook(_trim_logits, with_kwargs=True))
    freeze_except(model, lambda name: name == f"{path}.prompt")
    return {"num_virtual_tokens": config.num_virtual_tokens, **count_parameters(model)}


def soft_prompt_layer(model: nn.Module) -> SoftPromptEmbedding:
    layers = [m for m in model.modules() if isinstance(m, SoftPromptEmbedding)]
    if not layers:
        raise ValueError("this model has no soft prompt; add one with peftlab.methods.prompt.add_prompt(model, config)")
    return layers[0]


def _extend_inputs(model, args, kwargs):
    """Before the forward: embed ``input_ids`` with the prompt in front, and extend what lines up with them."""
    layer = soft_prompt_layer(model)
    if layer.disabled:
        return args, kwargs
    n = layer.num_virtual_tokens
    if len(args) > 1:
        raise ValueError("a prompt-tuned model takes its inputs by keyword (input_ids=..., attention_mask=...), so that "
                         "the mask can be extended for the virtual tokens")
    if kwargs.get("inputs_embeds") is not None:
        raise ValueError("a prompt-tuned model takes input_ids, not inputs_embeds: the soft prompt is prepended "
                         "inside the embedding layer")
    cache_position = kwargs.get("cache_position")
    cache = kwargs.get("past_key_values")
    continuing = (cache_position is not None and int(cache_position[0]) > 0) or \
        (cache is not None and hasattr(cache, "get_seq_length") and cache.get_seq_length() > 0)
    if continuing:
        raise ValueError("a prompt-tuned model here runs without a KV cache: call generate(..., use_cache=False); "
                         "with a cache only the newest token arrives and the soft prompt cannot be put in front")
    kwargs = dict(kwargs)
    input_ids = args[0] if args else kwargs.get("input_ids")
    if input_ids is None:
        raise ValueError("a prompt-tuned model needs input_ids")
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions is not None and n + input_ids.shape[1] > max_positions:
        raise ValueError(f"{n} virtual tokens + {input_ids.shape[1]} input tokens exceed the model's context of "
                         f"{max_positions} positions; shorten the input or the soft prompt")
    # The wrapped embedding puts the prompt in front; the model gets n + L vectors and no input_ids, so it counts
    # its positions (and, for BERT, sizes its default token types) over all n + L of them.
    kwargs["inputs_embeds"] = layer(input_ids)
    kwargs["input_ids"] = None
    args = ()
    mask = kwargs.get("attention_mask")
    if mask is not None:
        kwargs["attention_mask"] = torch.cat([mask.new_ones(mask.shape[0], n), mask], dim=1)
    labels = kwargs.get("labels")
    if labels is not None:
        kwargs["labels"] = torch.cat([labels.new_full((labels.shape[0], n), -100), labels], dim=1)
    if cache_position is not None:
        kwargs["cache_position"] = torch.arange(n + cache_position.shape[0], device=cache_position.device)
    token_types = kwargs.get("token_type_ids")
    if token_types is not None:  # the virtual tokens are segment 0, the text keeps its segments
        kwargs["token_type_ids"] = torch.cat([token_types.new_zeros(token_types.shape[0], n), token_types], dim=1)
    positions = kwargs.get("position_ids")
    if positions is not None:  # virtual tokens take positions 0..n-1, the real ones move up by n
        prefix = torch.arange(n, device=positions.device).expand(positions.shape[0], n)
        kwargs["position_ids"] = torch.cat([prefix, positions + n], dim=1)
    return args, kwargs


def _trim_logits(model, args, kwargs, output):
    """After the forward: drop the n virtual positions from per-token outputs (the kwargs here are the extended ones)."""
    layer = soft_prompt_layer(model)
    embeds = kwargs.get("inputs_embeds")
    if layer.disabled or embeds is None:
        return output
    n, length = layer.num_virtual_tokens, embeds.shape[1]
    for name in ("logits", "last_hidden_state"):  # a causal LM's logits; an encoder's (BertModel's) hidden states
        value = getattr(output, name, None)
        # only per-token outputs of the full length: not a classifier's (batch, labels) logits, and with
        # logits_to_keep (generate) there is nothing to drop
        if value is not None and value.dim() == 3 and value.shape[1] == length:
            setattr(output, name, value[:, n:])
    return output


@contextlib.contextmanager
def disable_prompt(model: nn.Module):
    """Inside this block no soft prompt is prepended: the model computes exactly as the base."""
    with wrappers_disabled([soft_prompt_layer(model)]):
        yield model


def remove_prompt(model: nn.Module) -> nn.Module:
    soft_prompt_layer(model)
    for handle in model.peftlab_prompt_hooks:
        handle.remove()
    unwrap(model, SoftPromptEmbedding)
    forget(model, "peftlab_prompt_hooks", "peftlab_prompt_config")
    return model


def nearest_tokens(model: nn.Module, tokenizer, k: int = 1) -> list[list[tuple[str, float]]]:
    """For each virtual token, the k vocabulary tokens whose embeddings are closest (cosine similarity).

    This is the usual way to "read" a soft prompt -- and the similarities show why it
    reads poorly: trained vectors often sit far from every real token.
    """
    layer = soft_prompt_layer(model)
    vocab = nn.functional.normalize(layer.base_layer.weight.detach().float(), dim=-1)
    prompt = nn.functional.normalize(layer.prompt.detach().float(), dim=-1)
    sims, ids = (prompt @ vocab.T).topk(k, dim=-1)
    return [[(tokenizer.convert_ids_to_tokens(int(i)), round(float(s), 3)) for i, s in zip(row_ids, row_sims)]
            for row_ids, row_sims in zip(ids, sims)]


# --- saving and loading, in peft's format: one tensor "prompt_embeddings" of shape (n, d) ---

def save_prompt(model: nn.Module, out_dir: str | Path) -> Path:
    layer = soft_prompt_layer(model)
    # peft applies a soft prompt only in a task-specific PeftModel; a model without a head (BertModel) is its
    # FEATURE_EXTRACTION case. (A plain PeftModel, task_type None, would load the prompt and silently not use it.)
    task_type = peft_task_type(model) or "FEATURE_EXTRACTION"
    peft_config = {"peft_type": "PROMPT_TUNING", "task_type": task_type,
                   "num_virtual_tokens": layer.num_virtual_tokens, "token_dim": layer.prompt.shape[1],
                   "num_transformer_submodules": 1, "num_attention_heads": model.config.num_attention_heads,
                   "num_layers": model.config.num_hidden_layers, "prompt_tuning_init": "RANDOM",
                   "inference_mode": True,
                   "base_model_name_or_path": getattr(model.config, "_name_or_path", None) or None}
    return save_folder(out_dir, peft_config, {"prompt_embeddings": layer.prompt.detach()})


def load_prompt(model: nn.Module, in_dir: str | Path) -> dict:
    raw, tensors = load_folder(in_dir)
    if raw.get("peft_type") != "PROMPT_TUNING":
        raise ValueError(f"{in_dir} holds a {raw.get('peft_type')} adapter, not a prompt-tuning soft prompt")
    config = PromptTuningConfig(num_virtual_tokens=raw["num_virtual_tokens"], init="random")  # then overwritten
    (_, embedding), = _input_embedding(model, config)
    check_tensors({"prompt_embeddings": (config.num_virtual_tokens, embedding.embedding_dim)}, tensors,
                  f"soft prompt in {in_dir}")
    report = add_prompt(model, config)
    with torch.no_grad():
        soft_prompt_layer(model).prompt.copy_(tensors["prompt_embeddings"])
    return report
