"""How much memory does fine-tuning a decoder model take? Counted from its shape, not measured.

    shape = ModelShape.known("Llama-2-7B")
    estimate(shape, "QLoRA")                     # what every step holds, whatever the data: bytes by part
    training_memory(shape, "QLoRA", seq=512)     # one training step's peak, activations included

``estimate`` counts what a step holds whatever the data: the weights (16-bit, or 4-bit NF4
with its scales), the trainable parameters' 32-bit copies, their gradients and the AdamW
states. The accounting follows the QLoRA paper (Dettmers et al. 2023, arXiv 2305.14314):
16-bit full fine-tuning keeps 16-bit weights and gradients and two 32-bit Adam moments,
12 bytes per parameter -- "more than 780 GB" for a 65B model. ``training_memory`` adds what
grows with batch size and sequence length: the activations kept for the backward pass, the
logits at the loss, and a fixed cuBLAS workspace; it is checked against peaks measured on an
H200 (``data/results/gpu_memory.json``, tests/test_memory.py).

Training *recipes* change the count as much as methods do (``RECIPES``): the default keeps 16-bit
weights; "fp32 + bf16 autocast" is mixed precision as transformers' ``Trainer(bf16=True)`` runs an
fp32 model; "peft QLoRA" is QLoRA as peft documents it, through ``prepare_model_for_kbit_training``,
which casts every weight that is not in 4 bits to fp32 -- and with it the whole residual stream.
And ``torch.optim.AdamW`` keeps its two moments in each parameter's own dtype (bf16 for bf16 weights),
where bitsandbytes' 32-bit AdamW keeps fp32. ``measured()`` says which combinations were checked
on a GPU; the others are counted by the same rules, unchecked.

The file reads top to bottom: the constants, the model's shape, one table per method (what
it trains, how its base is stored, what its activations keep), the recipes, then the two counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from peftlab.core.inject import ALL_LINEAR
from peftlab.methods.names import (ADAPTER_HOULSBY, ADAPTER_PFEIFFER, FULL_FINE_TUNING, IA3, LORA, PROMPT_TUNING,
                                   QLORA)

# --- constants --------------------------------------------------------------------------

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}  # the model's weights and activations
GB = 1e9  # decimal gigabytes, as GPU memory is sold ("24 GB")
GPUS_GB = (24, 48, 80, 141)
OPTIMIZERS = {  # bytes of optimizer state per trainable parameter, and whether it lives in paged (CPU-evictable) memory
    "AdamW 32-bit": (8.0, False),                 # two fp32 moments (bitsandbytes' AdamW, optim_bits=32)
    "AdamW 8-bit": (2.0 + 2 * 4 / 256, False),    # two 8-bit moments + an fp32 scale per block of 256 each (bitsandbytes)
    "paged AdamW 32-bit": (8.0, True),
    "paged AdamW 8-bit": (2.0 + 2 * 4 / 256, True),
    "torch AdamW": (None, False),                 # two moments in the parameter's own dtype (see _state_bytes)
}
LOGIT_BYTES = 12  # per vocabulary entry per token at the loss: bf16 logits, their fp32 copy / log-softmax and its gradient (measured)
WORKSPACE = 64 * 2**20  # cuBLAS workspace, taken from PyTorch's allocator at the first matrix product (measured on an H200)
CONFIG_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")


# --- the model's shape ------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    """A Llama-style decoder: what its parameter count and LoRA's size depend on."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool = False
    head_dim: int | None = None  # None: hidden / heads; newer models (Qwen3, Gemma) set it wider than that

    def __post_init__(self):
        for name in ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.head_dim is not None and (not isinstance(self.head_dim, int) or self.head_dim <= 0):
            raise ValueError(f"head_dim must be a positive integer, got {self.head_dim!r}")
        if self.head_dim is None and self.hidden % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden}), or give head_dim")
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads ({self.kv_heads}) must divide heads ({self.heads})")

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """From a ``transformers`` Llama-style config, or a dict with its keys (a ``config.json``)."""
        if not isinstance(config, dict):
            config = config.to_dict() if hasattr(config, "to_dict") else vars(config)
        if "num_hidden_layers" not in config and isinstance(config.get("text_config"), dict):
            config = config["text_config"]  # a vision-language model's config: the language model's shape is nested
        get = config.get
        missing = [k for k in CONFIG_KEYS if get(k) is None]
        if missing:
            raise ValueError(f"the config lacks {', '.join(missing)}: is it a decoder model's config?")
        return cls(get("num_hidden_layers"), get("hidden_size"), get("intermediate_size"), get("num_attention_heads"),
                   get("num_key_value_heads") or get("num_attention_heads"), get("vocab_size"),
                   bool(get("tie_word_embeddings", False)), get("head_dim"))

    def to_config(self) -> dict:
        """The shape as a transformers config's keys (``LlamaConfig(**shape.to_config())``): ``from_config`` backwards."""
        config = {"num_hidden_layers": self.layers, "hidden_size": self.hidden, "intermediate_size": self.intermediate,
                  "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads, "vocab_size": self.vocab,
                  "tie_word_embeddings": self.tied_embeddings}
        return config if self.head_dim is None else {**config, "head_dim": self.head_dim}

    @classmethod
    def known(cls, name: str) -> "ModelShape":
        if name not in KNOWN_SHAPES:
            raise ValueError(f"unknown model {name!r}; known shapes: {', '.join(KNOWN_SHAPES)}")
        return KNOWN_SHAPES[name]

    @property
    def head_width(self) -> int:
        """Width of one attention head: the config's head_dim, else hidden / heads."""
        return self.head_dim if self.head_dim is not None else self.hidden // self.heads

    @property
    def kv_width(self) -> int:
        """Output width of k_proj and v_proj (narrower than hidden with grouped-query attention)."""
        return self.head_width * self.kv_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder layer."""
        h, i, kv, q = self.hidden, self.intermediate, self.kv_width, self.head_width * self.heads
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def linear_parameters(self) -> int:
        """Parameters in the decoder layers' linear layers: what QLoRA quantizes."""
        return self.layers * sum(i * o for i, o in self.linear_shapes().values())

    def parameters(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        norms = self.layers * 2 * self.hidden + self.hidden
        return self.linear_parameters() + embeddings + norms

    def lora_parameters(self, r: int = 8, targets=ALL_LINEAR) -> int:
        shapes = self.linear_shapes()
        unknown = [t for t in targets if t not in shapes]
        if unknown:
            raise ValueError(f"unknown target(s) {unknown}; a Llama layer has {', '.join(shapes)}")
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ValueError(f"rank r must be a positive integer, got {r!r}")
        too_small = [(t, shapes[t]) for t in targets if r > min(shapes[t])]
        if too_small:
            t, (d_in, d_out) = too_small[0]
            raise ValueError(f"LoRA rank r={r} is larger than {t} ({d_out}x{d_in}) allows: a rank above "
                             f"min({d_out}, {d_in}) = {min(d_in, d_out)} adds parameters but no expressiveness")
        return self.layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


KNOWN_SHAPES = {  # from each model's published config.json
    "Llama-2-7B": ModelShape(32, 4096, 11008, 32, 32, 32000),
    "Llama-2-13B": ModelShape(40, 5120, 13824, 40, 40, 32000),
    "LLaMA-33B": ModelShape(60, 6656, 17920, 52, 52, 32000),
    "LLaMA-65B": ModelShape(80, 8192, 22016, 64, 64, 32000),
    "Llama-2-70B": ModelShape(80, 8192, 28672, 64, 8, 32000),
    "Llama-3.2-1B": ModelShape(16, 2048, 8192, 32, 8, 128256, tied_embeddings=True),
    "Llama-3.2-3B": ModelShape(28, 3072, 8192, 24, 8, 128256, tied_embeddings=True),
    "Llama-3.1-8B": ModelShape(32, 4096, 14336, 32, 8, 128256),
}


# --- one table per method ---------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """What a count depends on besides the shape; each method reads the fields it needs."""

    r: int = 8                        # LoRA / QLoRA rank
    targets: tuple = ALL_LINEAR       # LoRA / QLoRA target layers
    reduction_factor: int = 16        # adapters: bottleneck width = hidden / reduction_factor
    prompt_tokens: int = 16           # prompt tuning: virtual tokens
    double_quant: bool = True         # QLoRA: quantize the block scales too
    blocksize: int = 64               # QLoRA: weights per scale
    dtype: str = "bf16"               # the model's weights and activations


def _frozen_base_activations(shape: ModelShape, setup: Setup) -> float:
    """Bytes one token keeps in one layer of a frozen base (bf16 model, SDPA attention): what the gradient
    must pass through -- the norms' fp32 inputs (8 h), attention and the MLP products (8 h + 6 i in 2-byte
    tensors). For fp32 the tensors kept in the model's dtype double (the norms' copies do not), a rule not
    checked on a GPU."""
    h, i, scale = shape.hidden, shape.intermediate, DTYPE_BYTES[setup.dtype] / 2  # scale: the 2-byte tensors' factor
    return 8 * h + (8 * h + 6 * i) * scale


def _full_fine_tuning_activations(shape: ModelShape, setup: Setup) -> float:
    """Every RMSNorm's fp32 input and bf16 output, every linear layer's bf16 input, the rotated queries, the
    repeated keys and values and the attention output, the MLP's gate, SiLU and up outputs: 26 h + 8 i."""
    h, i, scale = shape.hidden, shape.intermediate, DTYPE_BYTES[setup.dtype] / 2
    return 8 * h + (18 * h + 8 * i) * scale


def _lora_trainable(shape: ModelShape, setup: Setup) -> int:
    return shape.lora_parameters(setup.r, setup.targets)


def _lora_activations(shape: ModelShape, setup: Setup) -> float:
    """peft's LoRA casts each adapted layer's input to its fp32 weights and keeps that copy (measured)."""
    fan_in = {name: d_in for name, (d_in, _) in shape.linear_shapes().items()}
    return _frozen_base_activations(shape, setup) + sum(4 * fan_in[t] for t in setup.targets)


def _ia3_trainable(shape: ModelShape, setup: Setup) -> int:
    """One vector per layer for keys and values (their outputs) and down_proj (its input)."""
    return shape.layers * (2 * shape.kv_width + shape.intermediate)


def _ia3_activations(shape: ModelShape, setup: Setup) -> float:
    """The scaled outputs of k and v, and the input of down_proj (not checked on a GPU)."""
    scale = DTYPE_BYTES[setup.dtype] / 2
    return _frozen_base_activations(shape, setup) + (4 * shape.kv_width + 2 * shape.intermediate) * scale


def _adapters(per_layer: int) -> tuple[Callable, Callable]:
    """Trainable count and activations of ``per_layer`` bottleneck adapters in every decoder layer."""
    def trainable(shape: ModelShape, setup: Setup) -> int:
        width = shape.hidden // setup.reduction_factor
        return shape.layers * per_layer * (2 * shape.hidden * width + width + shape.hidden)  # down and up, with biases

    def activations(shape: ModelShape, setup: Setup) -> float:  # input, hidden and activation per adapter (not checked)
        width = shape.hidden // setup.reduction_factor
        scale = DTYPE_BYTES[setup.dtype] / 2
        return _frozen_base_activations(shape, setup) + per_layer * (2 * shape.hidden + 4 * width) * scale
    return trainable, activations


@dataclass(frozen=True)
class MethodMemory:
    """How one method's training memory is counted."""

    trainable: Callable[[ModelShape, Setup], int]          # parameters it trains
    activations: Callable[[ModelShape, Setup], float]      # bytes one token keeps in one layer for the backward pass
    trains_everything: bool = False   # the weights are the trained parameters: gradients in the model's dtype, no
                                      # separate 32-bit copy, and gradients fill memory as activations are freed
    quantized_base: bool = False      # the frozen linear weights are stored in 4-bit NF4 with their scales
    adds_tokens: bool = False         # the soft prompt's virtual tokens run through every layer like real ones


# Keyed by the course's method names (peftlab.methods.names), as peftlab.study.experiments.METHODS is.
METHOD_MEMORY = {
    FULL_FINE_TUNING: MethodMemory(lambda shape, setup: shape.parameters(), _full_fine_tuning_activations,
                                     trains_everything=True),
    LORA: MethodMemory(_lora_trainable, _lora_activations),
    QLORA: MethodMemory(_lora_trainable, _lora_activations, quantized_base=True),
    IA3: MethodMemory(_ia3_trainable, _ia3_activations),
    ADAPTER_HOULSBY: MethodMemory(*_adapters(2)),   # after attention and after the MLP
    ADAPTER_PFEIFFER: MethodMemory(*_adapters(1)),  # after the MLP
    PROMPT_TUNING: MethodMemory(lambda shape, setup: setup.prompt_tokens * shape.hidden, _frozen_base_activations,
                                  adds_tokens=True),
}


def method_memory(method: str) -> MethodMemory:
    if method not in METHOD_MEMORY:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHOD_MEMORY)}")
    return METHOD_MEMORY[method]


# --- training recipes -------------------------------------------------------------------

def _autocast_lora_activations(shape: ModelShape, setup: Setup) -> float:
    """fp32 weights under bf16 autocast: the frozen base keeps what a bf16 one keeps, and each adapted layer's
    lora_A saves its own bf16 cast of its input (peft's fp32 copy is only passed through): 2 bytes x fan-in."""
    fan_in = {name: d_in for name, (d_in, _) in shape.linear_shapes().items()}
    return _frozen_base_activations(shape, Setup(dtype="bf16")) + sum(2 * fan_in[t] for t in setup.targets)


def _autocast_full_fine_tuning_activations(shape: ModelShape, setup: Setup) -> float:
    """Full fine-tuning of fp32 weights under bf16 autocast: bf16 full fine-tuning's 26 h + 8 i, plus 10 h -- the
    norms' outputs stay fp32 (+4 h), and q, k, v and gate, up each save their own bf16 cast of the input they share
    (+6 h)."""
    return _full_fine_tuning_activations(shape, Setup(dtype="bf16")) + 10 * shape.hidden


def _prepared_qlora_activations(shape: ModelShape, setup: Setup) -> float:
    """peft's QLoRA recipe: prepare_model_for_kbit_training leaves embeddings and norms in fp32, so the residual
    stream, attention and the MLP run in fp32 (bitsandbytes computes in bf16 but hands back its input's dtype):
    norms 8 h, attention 16 h, MLP 12 i. LoRA keeps the fp32 inputs it reads, shared where layers read the same
    tensor: 4 h for q, k, v; 4 h for o; 4 h for gate, up; 4 i for down."""
    h, i, targets = shape.hidden, shape.intermediate, set(setup.targets)
    lora = (4 * h * bool(targets & {"q_proj", "k_proj", "v_proj"}) + 4 * h * ("o_proj" in targets)
            + 4 * h * bool(targets & {"gate_proj", "up_proj"}) + 4 * i * ("down_proj" in targets))
    return 24 * h + 12 * i + lora


@dataclass(frozen=True)
class Recipe:
    """How a training setup stores its weights and runs its arithmetic."""

    description: str
    weights: str | None = None        # dtype of the weights not in 4 bits (None: the ``dtype`` argument)
    residual: str | None = None       # dtype of the hidden states between layers, what checkpointing keeps (None: dtype)
    activations: dict = field(default_factory=dict)  # method -> bytes per token per layer, where the recipe changes them
    bf16_weight_copies: bool = False  # autocast saves a bf16 copy of every linear weight for the backward pass
    methods: tuple | None = None      # the methods it is counted for (None: all)


RECIPES = {
    "16-bit": Recipe("weights, activations and compute in ``dtype`` (bf16 unless told)"),
    "fp32 + bf16 autocast": Recipe(
        "fp32 weights, forward pass under bf16 autocast: transformers' Trainer(bf16=True) on an fp32 model",
        weights="fp32", residual="fp32", bf16_weight_copies=True, methods=(FULL_FINE_TUNING, LORA),
        activations={LORA: _autocast_lora_activations, FULL_FINE_TUNING: _autocast_full_fine_tuning_activations}),
    "peft QLoRA": Recipe(
        "QLoRA as peft documents it: prepare_model_for_kbit_training casts every weight not in 4 bits to fp32",
        weights="fp32", residual="fp32", methods=(QLORA,), activations={QLORA: _prepared_qlora_activations}),
}

# (recipe, dtype, method, optimizer) combinations whose peaks were measured on an H200 (data/results/gpu_memory.json,
# tests/test_memory.py keeps the two in step); everything else is counted by the same rules but unchecked.
MEASURED = ({("16-bit", "bf16", m, "AdamW 32-bit") for m in (FULL_FINE_TUNING, LORA, QLORA)}
            | {("16-bit", "bf16", FULL_FINE_TUNING, "AdamW 8-bit")}
            | {("16-bit", "bf16", m, "torch AdamW") for m in (FULL_FINE_TUNING, LORA)}
            | {("fp32 + bf16 autocast", "bf16", m, "torch AdamW") for m in (FULL_FINE_TUNING, LORA)}
            | {("peft QLoRA", "bf16", QLORA, "torch AdamW")})


def measured(method: str, recipe: str = "16-bit", dtype: str = "bf16", optimizer: str = "AdamW 32-bit") -> bool:
    """Whether this combination's peak was measured on a GPU (otherwise: counted by the same rules, unchecked)."""
    return (recipe, dtype, method, optimizer) in MEASURED


def recipe_rules(recipe: str, method: str, dtype: str) -> Recipe:
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    rules = RECIPES[recipe]
    if rules.methods is not None and method not in rules.methods:
        raise ValueError(f"the recipe {recipe!r} is counted for {', '.join(rules.methods)} only, not {method!r}")
    if rules.weights is not None and dtype != "bf16":
        raise ValueError(f"the recipe {recipe!r} fixes its dtypes (it computes in bf16); leave dtype at 'bf16', "
                         f"got {dtype!r}")
    return rules


def trainable_count(shape: ModelShape, method: str, **setup) -> int:
    """What ``method`` trains on this shape, counted as peftlab (and peft / AdapterHub) builds it."""
    return method_memory(method).trainable(shape, Setup(**setup))


def activation_bytes_per_token(shape: ModelShape, method: str, recipe: str = "16-bit", **setup) -> float:
    """Bytes one token's activations keep for the backward pass in one decoder layer."""
    rules = recipe_rules(recipe, method, setup.get("dtype", "bf16"))
    return rules.activations.get(method, method_memory(method).activations)(shape, Setup(**setup))


# --- the counts -------------------------------------------------------------------------

def _check_choices(optimizer: str, dtype: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}")


def _state_bytes(optimizer: str, trained_dtype_bytes: int) -> float:
    """Optimizer state per trainable parameter; torch's AdamW keeps its moments in the parameter's dtype."""
    state, _ = OPTIMIZERS[optimizer]
    return 2 * trained_dtype_bytes if state is None else state


def estimate(shape: ModelShape, method: str = LORA, r: int = 8, targets=ALL_LINEAR,
             double_quant: bool = True, blocksize: int = 64, reduction_factor: int = 16, prompt_tokens: int = 16,
             optimizer: str = "AdamW 32-bit", dtype: str = "bf16", recipe: str = "16-bit") -> dict[str, float]:
    """Bytes held during training, by part, before activations. ``method``: a key of ``METHOD_MEMORY``;
    ``recipe``: a key of ``RECIPES``. Every method but full fine-tuning keeps a frozen base (16-bit, or
    4-bit for QLoRA) plus 16 bytes per trainable parameter (32-bit copy, gradient, two AdamW moments)."""
    counted = method_memory(method)  # how the method counts: trainable parameters, activations
    _check_choices(optimizer, dtype)
    stored = recipe_rules(recipe, method, dtype)  # how the recipe stores and computes: weights, copies
    setup = Setup(r=r, targets=tuple(targets), reduction_factor=reduction_factor, prompt_tokens=prompt_tokens,
                  double_quant=double_quant, blocksize=blocksize, dtype=dtype)
    paged = OPTIMIZERS[optimizer][1]
    states = "optimizer states (paged)" if paged else "optimizer states"  # paged: can move to CPU memory under pressure
    b = DTYPE_BYTES[stored.weights or dtype]
    total = shape.parameters()
    weights, constants = b * total, 0
    if counted.quantized_base:
        quantized = shape.linear_parameters()
        # 4 bits per weight; one scale per block: 32 bits, or 8 bits plus a 32-bit scale per 256 scales
        scale_bits = 8 / blocksize + 32 / (blocksize * 256) if double_quant else 32 / blocksize
        weights = quantized * 4 / 8 + b * (total - quantized)  # embeddings and norms keep the model's dtype
        constants = quantized * scale_bits / 8
    trainable = counted.trainable(shape, setup)
    copy_bytes, gradient_bytes = (0, b) if counted.trains_everything else (4, 4)
    return {"weights": weights, "quantization constants": constants, "trainable (32-bit)": copy_bytes * trainable,
            "gradients": gradient_bytes * trainable, states: _state_bytes(optimizer, gradient_bytes) * trainable}


def training_memory(shape: ModelShape, method: str = LORA, seq: int = 512, batch: int = 1,
                    gradient_checkpointing: bool = False, optimizer: str = "AdamW 32-bit", r: int = 8,
                    targets=ALL_LINEAR, double_quant: bool = True, blocksize: int = 64, reduction_factor: int = 16,
                    prompt_tokens: int = 16, dtype: str = "bf16", recipe: str = "16-bit") -> dict:
    """Peak memory of a training step on a GPU, by part (QLoRA: NF4 weights, compute in ``dtype``).

    Returns ``{"parts": {name: bytes}, "peak": bytes, "dominant": name, "measured": bool}``. The peak is
    not always the sum of the parts: in full fine-tuning the gradients are allocated during the backward
    pass while the activations are being freed, so the peak holds the larger of the two (plus the static
    parts); torch's AdamW (``foreach``) takes one more copy of the trained parameters during its step.
    ``measured`` says whether this combination was checked against GPU peaks (``data/results/gpu_memory.json``,
    tests/test_memory.py); the others are counted by the same rules, unchecked.
    """
    counted = method_memory(method)  # how the method counts: trainable parameters, activations
    _check_choices(optimizer, dtype)
    stored = recipe_rules(recipe, method, dtype)  # how the recipe stores and computes: weights, copies
    for name, value in (("seq", seq), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if counted.adds_tokens:
        seq += prompt_tokens
    static = estimate(shape, method, r=r, targets=targets, double_quant=double_quant, blocksize=blocksize,
                      reduction_factor=reduction_factor, prompt_tokens=prompt_tokens, optimizer=optimizer, dtype=dtype,
                      recipe=recipe)
    tokens = seq * batch
    per_layer = activation_bytes_per_token(shape, method, recipe=recipe, r=r, targets=tuple(targets),
                                           reduction_factor=reduction_factor, dtype=dtype)
    logits = tokens * (LOGIT_BYTES * shape.vocab + 4 * shape.hidden)
    # autocast saves the bf16 copy of each weight a matrix product used: all of them, or with checkpointing only the
    # output layer's (the layers' copies are made again when a layer is recomputed)
    output_layer = shape.vocab * shape.hidden
    copies = 2 * (output_layer + (0 if gradient_checkpointing else shape.linear_parameters())) \
        if stored.bf16_weight_copies else 0
    if gradient_checkpointing:  # each layer keeps its input; the loss, or one recomputed layer, comes on top
        activations = tokens * shape.layers * DTYPE_BYTES[stored.residual or dtype] * shape.hidden
        dynamic = activations + max(logits, tokens * per_layer) + copies
    else:
        activations = tokens * shape.layers * per_layer
        dynamic = activations + logits + copies
    gradients = static.pop("gradients")
    step_copy = gradients if OPTIMIZERS[optimizer][0] is None else 0  # foreach: one temporary of the trained weights
    parts = {**static, "gradients": gradients, "activations": activations, "logits": logits}
    if copies:
        parts["bf16 weight copies"] = copies
    if step_copy:
        parts["optimizer step (temporary)"] = step_copy
    parts["workspace"] = WORKSPACE
    steady = sum(static.values()) + WORKSPACE
    if counted.trains_everything:
        # gradients appear as activations are freed: the peak holds the larger of the two. A tied embedding
        # gets two gradients (from the input and the output layer), summed out of place at the end: +2 copies.
        weight_bytes = DTYPE_BYTES[stored.weights or dtype]  # full fine-tuning's gradients take the weights' dtype
        tied = 2 * weight_bytes * shape.vocab * shape.hidden if shape.tied_embeddings else 0
        peak = steady + max(gradients + tied, dynamic, gradients + step_copy)
    else:
        peak = steady + gradients + max(dynamic, step_copy)
    dominant = max(parts, key=parts.get)
    return {"parts": parts, "peak": peak, "dominant": dominant,
            "measured": measured(method, recipe, dtype, optimizer)}


def estimate_measured(row: dict) -> dict:
    """``training_memory`` for one row of ``data/results/gpu_memory.json`` (its shape, recipe and setup)."""
    return training_memory(ModelShape.from_config(row), row["method"], seq=row["seq"], batch=row["batch"],
                           gradient_checkpointing=row["gradient_checkpointing"], optimizer=row["optimizer"],
                           r=row["lora_r"] or 8, targets=tuple(row["lora_targets"] or ALL_LINEAR),
                           recipe=row.get("recipe", "16-bit"))


def total_gb(parts: dict[str, float]) -> float:
    return sum(parts.values()) / GB
