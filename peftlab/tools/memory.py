"""How much memory does fine-tuning a decoder model take? Counted from its shape, not measured.

    shape = ModelShape.known("Llama-2-7B")
    estimate(shape, "qlora")           # {"weights": bytes, "quantization constants": ..., ...}

This counts what every training step must hold whatever the data: the weights (16-bit, or
4-bit NF4 with its scales), the trainable parameters' 32-bit copies, their gradients and the
AdamW states. The accounting follows the QLoRA paper (Dettmers et al. 2023, arXiv 2305.14314):
16-bit full fine-tuning keeps 16-bit weights and gradients and two 32-bit Adam moments,
12 bytes per parameter -- "more than 780 GB" for a 65B model. Activations come on top and grow
with batch size and sequence length; they are not counted here.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftlab.core.inject import ALL_LINEAR

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}  # the model's weights and activations
GB = 1e9  # decimal gigabytes, as GPU memory is sold ("24 GB")
GPUS_GB = (24, 48, 80, 141)
METHODS = ("full fine-tuning", "LoRA", "QLoRA", "IA3", "adapter (Houlsby)", "adapter (Pfeiffer)", "prompt tuning")


CONFIG_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")


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

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder layer."""
        kv = self.hidden // self.heads * self.kv_heads
        return {"q_proj": (self.hidden, self.hidden), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                "o_proj": (self.hidden, self.hidden), "gate_proj": (self.hidden, self.intermediate),
                "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}

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

    def trainable_parameters(self, method: str, r: int = 8, targets=ALL_LINEAR, reduction_factor: int = 16,
                             prompt_tokens: int = 16) -> int:
        """What ``method`` trains on this shape, counted as peftlab (and peft / AdapterHub) builds it."""
        if method == "full fine-tuning":
            return self.parameters()
        if method in ("LoRA", "QLoRA"):
            return self.lora_parameters(r, targets)
        if method == "IA3":  # keys, values (outputs) and down_proj (its input)
            shapes = self.linear_shapes()
            return self.layers * (shapes["k_proj"][1] + shapes["v_proj"][1] + shapes["down_proj"][0])
        if method in ("adapter (Houlsby)", "adapter (Pfeiffer)"):
            width = self.hidden // reduction_factor
            one = 2 * self.hidden * width + width + self.hidden  # down and up projections with biases
            return self.layers * one * (2 if method == "adapter (Houlsby)" else 1)
        if method == "prompt tuning":
            return prompt_tokens * self.hidden
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


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


def estimate(shape: ModelShape, method: str = "LoRA", r: int = 8, targets=ALL_LINEAR,
             double_quant: bool = True, blocksize: int = 64, reduction_factor: int = 16, prompt_tokens: int = 16,
             optimizer: str = "AdamW 32-bit", dtype: str = "bf16") -> dict[str, float]:
    """Bytes held during training, by part, excluding activations. ``method``: one of ``METHODS``;
    every method but full fine-tuning keeps a frozen 16-bit base (QLoRA: 4-bit) plus 16 bytes per
    trainable parameter (32-bit copy, gradient, two AdamW moments)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}")
    state_bytes, paged = OPTIMIZERS[optimizer]
    states = "optimizer states (paged)" if paged else "optimizer states"  # paged: can move to CPU memory under pressure
    b = DTYPE_BYTES[dtype]
    total = shape.parameters()
    if method == "full fine-tuning":
        return {"weights": b * total, "quantization constants": 0, "trainable (32-bit)": 0,
                "gradients": b * total, states: state_bytes * total}
    trainable = shape.trainable_parameters(method, r, targets, reduction_factor, prompt_tokens)
    parts = {"weights": b * total, "quantization constants": 0, "trainable (32-bit)": 4 * trainable,
             "gradients": 4 * trainable, states: state_bytes * trainable}
    if method == "QLoRA":
        quantized = shape.linear_parameters()
        # 4 bits per weight; one scale per block: 32 bits, or 8 bits plus a 32-bit scale per 256 scales
        scale_bits = 8 / blocksize + 32 / (blocksize * 256) if double_quant else 32 / blocksize
        parts["weights"] = quantized * 4 / 8 + b * (total - quantized)  # embeddings and norms keep the model's dtype
        parts["quantization constants"] = quantized * scale_bits / 8
    return parts


OPTIMIZERS = {  # bytes of optimizer state per trainable parameter, and whether it lives in paged (CPU-evictable) memory
    "AdamW 32-bit": (8.0, False),                 # two fp32 moments
    "AdamW 8-bit": (2.0 + 2 * 4 / 256, False),    # two 8-bit moments + an fp32 scale per block of 256 each (bitsandbytes)
    "paged AdamW 32-bit": (8.0, True),
    "paged AdamW 8-bit": (2.0 + 2 * 4 / 256, True),
}
LOGIT_BYTES = 12  # per vocabulary entry per token at the loss: bf16 logits, their fp32 copy / log-softmax and its gradient (measured)
WORKSPACE = 64 * 2**20  # cuBLAS workspace, taken from PyTorch's allocator at the first matrix product (measured on an H200)


def activation_bytes_per_token(shape: ModelShape, method: str, targets=ALL_LINEAR, reduction_factor: int = 16,
                               dtype: str = "bf16") -> float:
    """Bytes one token's activations keep for the backward pass, in one decoder layer (bf16 model, SDPA attention).

    Counted from what autograd saves in transformers' Llama layer: full fine-tuning keeps each RMSNorm's fp32
    input and bf16 output, every linear layer's bf16 input, the rotated queries, the repeated keys and values and
    the attention output, and the MLP's gate, SiLU and up outputs: 26 h + 8 i bytes. A frozen base keeps only
    what the gradient must pass through (norm inputs in fp32, attention, MLP products: 16 h + 6 i), plus what
    the method needs -- peft's LoRA casts each adapted layer's input to its fp32 weights and keeps that copy
    (4 bytes x in_features per target). Measured for bf16; for fp32 the tensors kept in the model's dtype
    double (the norms' fp32 copies do not), a rule not checked on a GPU.
    """
    h, i = shape.hidden, shape.intermediate
    kv = shape.hidden // shape.heads * shape.kv_heads
    scale = DTYPE_BYTES[dtype] / 2  # the terms below count 2-byte tensors, except the norms' fp32 inputs (8 h)
    if method == "full fine-tuning":
        return 8 * h + (18 * h + 8 * i) * scale
    frozen = 8 * h + (8 * h + 6 * i) * scale
    inputs = {name: fan_in for name, (fan_in, _) in shape.linear_shapes().items()}
    if method in ("LoRA", "QLoRA"):
        return frozen + sum(4 * inputs[t] for t in targets)
    if method == "IA3":  # the scaled outputs of k and v, and the input of down_proj (not checked on a GPU)
        return frozen + (2 * kv + 2 * kv + 2 * i) * scale
    if method in ("adapter (Houlsby)", "adapter (Pfeiffer)"):  # input, hidden and activation per adapter (not checked)
        width = h // reduction_factor
        return frozen + (2 if method == "adapter (Houlsby)" else 1) * (2 * h + 2 * width + 2 * width) * scale
    if method == "prompt tuning":
        return frozen
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def training_memory(shape: ModelShape, method: str = "LoRA", seq: int = 512, batch: int = 1,
                    gradient_checkpointing: bool = False, optimizer: str = "AdamW 32-bit", r: int = 8,
                    targets=ALL_LINEAR, double_quant: bool = True, reduction_factor: int = 16,
                    prompt_tokens: int = 16, dtype: str = "bf16") -> dict:
    """Peak memory of a training step on a GPU, by part (QLoRA: NF4 weights, compute in ``dtype``).

    Returns ``{"parts": {name: bytes}, "peak": bytes, "dominant": name}``. The peak is not always the
    sum of the parts: in full fine-tuning the gradients are allocated during the backward pass while
    the activations are being freed, so the peak holds the larger of the two (plus the static parts).
    Checked against measured GPU peaks in ``data/results/gpu_memory.json`` for full
    fine-tuning, LoRA and QLoRA (tests/test_memory.py); the other methods are counted the same way
    but were not measured.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    for name, value in (("seq", seq), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if method == "prompt tuning":
        seq += prompt_tokens  # the virtual tokens run through every layer like real ones
    static = estimate(shape, method, r=r, targets=targets, double_quant=double_quant,
                      reduction_factor=reduction_factor, prompt_tokens=prompt_tokens, optimizer=optimizer, dtype=dtype)
    tokens = seq * batch
    per_layer = activation_bytes_per_token(shape, method, targets, reduction_factor, dtype)
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
    if method == "full fine-tuning":
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


def fits(parts: dict[str, float], gpu_gb: float) -> bool:
    """Whether the counted parts alone fit (activations still need room)."""
    return total_gb(parts) <= gpu_gb
