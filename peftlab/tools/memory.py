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

The file reads top to bottom: the constants, the model's shape, one table per method (what
it trains, how its base is stored, what its activations keep), then the two counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from peftlab.core.inject import ALL_LINEAR

# --- constants --------------------------------------------------------------------------

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}  # the model's weights and activations
GB = 1e9  # decimal gigabytes, as GPU memory is sold ("24 GB")
GPUS_GB = (24, 48, 80, 141)
OPTIMIZERS = {  # bytes of optimizer state per trainable parameter, and whether it lives in paged (CPU-evictable) memory
    "AdamW 32-bit": (8.0, False),                 # two fp32 moments
    "AdamW 8-bit": (2.0 + 2 * 4 / 256, False),    # two 8-bit moments + an fp32 scale per block of 256 each (bitsandbytes)
    "paged AdamW 32-bit": (8.0, True),
    "paged AdamW 8-bit": (2.0 + 2 * 4 / 256, True),
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

    def __post_init__(self):
        for field in ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if self.hidden % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden})")
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads ({self.kv_heads}) must divide heads ({self.heads})")

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """From a ``transformers`` Llama-style config, or a dict with its keys (a ``config.json``)."""
        get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
        missing = [k for k in CONFIG_KEYS if get(k) is None]
        if missing:
            raise ValueError(f"the config lacks {', '.join(missing)}: is it a decoder model's config?")
        return cls(get("num_hidden_layers"), get("hidden_size"), get("intermediate_size"), get("num_attention_heads"),
                   get("num_key_value_heads") or get("num_attention_heads"), get("vocab_size"),
                   bool(get("tie_word_embeddings", False)))

    @classmethod
    def known(cls, name: str) -> "ModelShape":
        if name not in KNOWN_SHAPES:
            raise ValueError(f"unknown model {name!r}; known shapes: {', '.join(KNOWN_SHAPES)}")
        return KNOWN_SHAPES[name]

    @property
    def kv_width(self) -> int:
        """Output width of k_proj and v_proj (narrower than hidden with grouped-query attention)."""
        return self.hidden // self.heads * self.kv_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder layer."""
        h, i, kv = self.hidden, self.intermediate, self.kv_width
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
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
        if r <= 0:
            raise ValueError(f"rank r must be positive, got {r}")
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


# Keyed by the method names of peftlab.tools.experiments.METHODS (tests/test_memory.py keeps them in step).
METHOD_MEMORY = {
    "full fine-tuning": MethodMemory(lambda shape, setup: shape.parameters(), _full_fine_tuning_activations,
                                     trains_everything=True),
    "LoRA": MethodMemory(_lora_trainable, _lora_activations),
    "QLoRA": MethodMemory(_lora_trainable, _lora_activations, quantized_base=True),
    "IA3": MethodMemory(_ia3_trainable, _ia3_activations),
    "adapter (Houlsby)": MethodMemory(*_adapters(2)),   # after attention and after the MLP
    "adapter (Pfeiffer)": MethodMemory(*_adapters(1)),  # after the MLP
    "prompt tuning": MethodMemory(lambda shape, setup: setup.prompt_tokens * shape.hidden, _frozen_base_activations,
                                  adds_tokens=True),
}


def method_memory(method: str) -> MethodMemory:
    if method not in METHOD_MEMORY:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHOD_MEMORY)}")
    return METHOD_MEMORY[method]


def trainable_parameters(shape: ModelShape, method: str, **setup) -> int:
    """What ``method`` trains on this shape, counted as peftlab (and peft / AdapterHub) builds it."""
    return method_memory(method).trainable(shape, Setup(**setup))


def activation_bytes_per_token(shape: ModelShape, method: str, **setup) -> float:
    """Bytes one token's activations keep for the backward pass in one decoder layer."""
    return method_memory(method).activations(shape, Setup(**setup))


# --- the counts -------------------------------------------------------------------------

def _check_choices(optimizer: str, dtype: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}")


def estimate(shape: ModelShape, method: str = "LoRA", r: int = 8, targets=ALL_LINEAR,
             double_quant: bool = True, blocksize: int = 64, reduction_factor: int = 16, prompt_tokens: int = 16,
             optimizer: str = "AdamW 32-bit", dtype: str = "bf16") -> dict[str, float]:
    """Bytes held during training, by part, before activations. ``method``: a key of ``METHOD_MEMORY``.
    Every method but full fine-tuning keeps a frozen 16-bit base (QLoRA: 4-bit) plus 16 bytes per
    trainable parameter (32-bit copy, gradient, two AdamW moments)."""
    rule = method_memory(method)
    _check_choices(optimizer, dtype)
    setup = Setup(r, tuple(targets), reduction_factor, prompt_tokens, double_quant, blocksize, dtype)
    state_bytes, paged = OPTIMIZERS[optimizer]
    states = "optimizer states (paged)" if paged else "optimizer states"  # paged: can move to CPU memory under pressure
    b = DTYPE_BYTES[dtype]
    total = shape.parameters()
    weights, constants = b * total, 0
    if rule.quantized_base:
        quantized = shape.linear_parameters()
        # 4 bits per weight; one scale per block: 32 bits, or 8 bits plus a 32-bit scale per 256 scales
        scale_bits = 8 / blocksize + 32 / (blocksize * 256) if double_quant else 32 / blocksize
        weights = quantized * 4 / 8 + b * (total - quantized)  # embeddings and norms keep the model's dtype
        constants = quantized * scale_bits / 8
    trainable = rule.trainable(shape, setup)
    copy_bytes, gradient_bytes = (0, b) if rule.trains_everything else (4, 4)
    return {"weights": weights, "quantization constants": constants, "trainable (32-bit)": copy_bytes * trainable,
            "gradients": gradient_bytes * trainable, states: state_bytes * trainable}


def training_memory(shape: ModelShape, method: str = "LoRA", seq: int = 512, batch: int = 1,
                    gradient_checkpointing: bool = False, optimizer: str = "AdamW 32-bit", r: int = 8,
                    targets=ALL_LINEAR, double_quant: bool = True, reduction_factor: int = 16,
                    prompt_tokens: int = 16, dtype: str = "bf16") -> dict:
    """Peak memory of a training step on a GPU, by part (QLoRA: NF4 weights, compute in ``dtype``).

    Returns ``{"parts": {name: bytes}, "peak": bytes, "dominant": name}``. The peak is not always the
    sum of the parts: in full fine-tuning the gradients are allocated during the backward pass while
    the activations are being freed, so the peak holds the larger of the two (plus the static parts).
    Checked against measured GPU peaks in ``data/results/gpu_memory.json`` for full fine-tuning,
    LoRA and QLoRA (tests/test_memory.py); the other methods are counted the same way but were not measured.
    """
    rule = method_memory(method)
    _check_choices(optimizer, dtype)
    for name, value in (("seq", seq), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if rule.adds_tokens:
        seq += prompt_tokens
    static = estimate(shape, method, r=r, targets=targets, double_quant=double_quant,
                      reduction_factor=reduction_factor, prompt_tokens=prompt_tokens, optimizer=optimizer, dtype=dtype)
    tokens = seq * batch
    per_layer = activation_bytes_per_token(shape, method, r=r, targets=tuple(targets),
                                           reduction_factor=reduction_factor, dtype=dtype)
    logits = tokens * (LOGIT_BYTES * shape.vocab + 4 * shape.hidden)
    if gradient_checkpointing:  # each layer keeps its input; the loss, or one recomputed layer, comes on top
        activations = tokens * shape.layers * DTYPE_BYTES[dtype] * shape.hidden
        dynamic = activations + max(logits, tokens * per_layer)
    else:
        activations = tokens * shape.layers * per_layer
        dynamic = activations + logits
    gradients = static.pop("gradients")
    parts = {**static, "gradients": gradients, "activations": activations, "logits": logits, "workspace": WORKSPACE}
    steady = sum(static.values()) + WORKSPACE
    if rule.trains_everything:
        # gradients appear as activations are freed: the peak holds the larger of the two. A tied embedding
        # gets two gradients (from the input and the output layer), summed out of place at the end: +2 copies.
        end_of_backward = gradients + (2 * DTYPE_BYTES[dtype] * shape.vocab * shape.hidden if shape.tied_embeddings else 0)
        peak = steady + max(end_of_backward, dynamic)
    else:
        peak = steady + gradients + dynamic
    dominant = max(parts, key=parts.get)
    return {"parts": parts, "peak": peak, "dominant": dominant}


def estimate_measured(row: dict) -> dict:
    """``training_memory`` for one row of ``data/results/gpu_memory.json`` (its shape and setup)."""
    return training_memory(ModelShape.from_config(row), row["method"], seq=row["seq"], batch=row["batch"],
                           gradient_checkpointing=row["gradient_checkpointing"], optimizer=row["optimizer"],
                           r=row["lora_r"] or 8, targets=tuple(row["lora_targets"] or ALL_LINEAR))


def total_gb(parts: dict[str, float]) -> float:
    return sum(parts.values()) / GB
