"""NF4 quantization from scratch: Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized
LLMs" (arXiv 2305.14314), section 3 -- 4-bit NormalFloat, blockwise absmax, double quantization.

1. **The codebook.** Pretrained weights are roughly normal. NF4 puts its 16 levels at
   quantiles of N(0, 1), so each level is used about equally often: 8 positive levels from
   the quantiles between 0.5 and ``offset``, 7 negative ones, and an exact zero, all divided
   by the largest so that they span [-1, 1]. (``offset`` = 0.9677083 is bitsandbytes' choice.)
2. **Blockwise absmax.** The weight is flattened and cut into blocks of 64. Each block is
   divided by its largest absolute value (one fp32 "absmax" per block) and every value is
   replaced by the index of the nearest level: 4 bits.
3. **Packing.** Two 4-bit indices per byte, the first in the high nibble.
4. **Double quantization.** 32 bits of absmax per 64 weights cost 0.5 bit per parameter. QLoRA
   quantizes the absmax values themselves: subtract their mean, then 8-bit blockwise
   quantization (blocks of 256) with bitsandbytes' dynamic 8-bit map: 8/64 + 32/(64*256)
   = 0.127 bit per parameter instead of 0.5.

Everything here is plain torch. The tests compare it with ``bitsandbytes.functional.quantize_4bit``
/ ``dequantize_4bit`` (``quant_type="nf4"``): identical packed bytes, scales and dequantized values.
Two details are copied on purpose from bitsandbytes so the bytes match: full blocks are scaled
by *multiplying* with 1/absmax and the last partial block by *dividing* by its absmax, and a
value exactly on the midpoint between two levels takes the lower one.

Where we differ, with double quantization: the packed codes, the offset and the per-256
scales are identical, but bitsandbytes' CPU kernel for the 8-bit step does not always pick
the nearest level of its dynamic map (measured: about 0.2% of absmax values, one level off,
up to four next to zero). Here every absmax gets the nearest level, so our reconstruction
is never further from the true absmax (tests/test_nf4.py states and checks the bounds).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from peftlab.core.inject import FrozenLinear, is_conv1d, transpose

NF4_OFFSET = 0.9677083  # the outermost quantile used, as in bitsandbytes' create_normal_map
BLOCKSIZE = 64
ABSMAX_BLOCKSIZE = 256  # double quantization's block size for the absmax values


@lru_cache
def nf4_codebook(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 levels, built from normal quantiles (float32, sorted, in [-1, 1]). Cached: do not modify."""
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())   # 8 levels above zero
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())  # 7 levels below zero
    levels = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).float().sort().values
    return levels / levels.max()


@lru_cache
def dynamic_codebook() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic map (Dettmers 2016): 256 levels, dense near zero. Cached."""
    levels: list[float] = []
    for i in range(7):  # one decade per exponent, 10^-6 .. 10^0, with 2^i fraction steps each
        edges = torch.linspace(0.1, 1, 2 ** i + 1, dtype=torch.float32)
        means = (edges[:-1] + edges[1:]) / 2.0
        levels += (10 ** (-6 + i) * means).tolist()
        levels += (-(10 ** (-6 + i)) * means).tolist()
    levels += [0.0, 1.0]
    return torch.tensor(sorted(levels), dtype=torch.float32)


def int4_codebook() -> torch.Tensor:
    """Uniform symmetric 4-bit levels k/7, k = -7..7 (15 levels; bitsandbytes' "int4" table)."""
    return torch.arange(-7, 8, dtype=torch.float32) / 7


def fp4_codebook() -> torch.Tensor:
    """4-bit floats, 1 sign, 2 exponent and 1 mantissa bit (E2M1, exponent bias 2, as bitsandbytes' "fp4").

    Magnitudes 0, 0.0625 (subnormal), 2, 3, 4, 6, 8, 12, divided by 12 to span [-1, 1];
    +0 and -0 are one level, so 15 distinct values.
    """
    magnitudes = torch.tensor([0.0, 0.0625, 2, 3, 4, 6, 8, 12]) / 12
    return torch.cat([-magnitudes[1:].flip(0), magnitudes])


CODEBOOKS = {"NF4": nf4_codebook, "int4": int4_codebook, "FP4": fp4_codebook}


def quantize_dequantize(x: torch.Tensor, codebook: str | torch.Tensor = "NF4", blocksize: int = BLOCKSIZE) -> torch.Tensor:
    """``x`` after a round trip through a 4-bit codebook with blockwise absmax (no packing): what the
    weight becomes. ``codebook`` is a name in ``CODEBOOKS`` or a sorted tensor of levels in [-1, 1].
    With the NF4 codebook this equals ``dequantize_nf4(quantize_nf4(x, blocksize))``.
    """
    if isinstance(codebook, str):
        if codebook not in CODEBOOKS:
            raise ValueError(f"unknown codebook {codebook!r}; choose one of {', '.join(CODEBOOKS)} or pass a tensor of levels")
        codebook = CODEBOOKS[codebook]()
    codebook = codebook.to(x.device)  # the codebooks are built on the CPU; x may be on a GPU
    if blocksize < 1:
        raise ValueError(f"blocksize must be >= 1, got {blocksize}")
    _check_finite(x)
    absmax, scaled = _block_scale(x.detach().reshape(-1).float(), blocksize)
    values = codebook[_nearest(scaled, codebook)]
    return _times_block_scale(values, absmax, blocksize).reshape(x.shape).to(x.dtype)


def _check_finite(x: torch.Tensor) -> None:
    bad = ~torch.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"cannot quantize a tensor with {int(bad.sum())} NaN or infinite values (the first at "
                         f"index {first}): one bad value would set its whole block's scale")


def _block_scale(flat: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(absmax per block, values scaled into [-1, 1]) exactly as bitsandbytes computes them."""
    n = flat.numel()
    full = n - n % blocksize
    blocks = flat[:full].view(-1, blocksize)
    absmax = blocks.abs().max(dim=-1).values
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1), -1, 1).reshape(-1)
    if full < n:
        last = flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, last.view(1)])
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / last, -1, 1)])
    return absmax, scaled


def _nearest(scaled: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    codebook = codebook.to(scaled.device)  # the codebooks are built on the CPU; the values may be on a GPU
    midpoints = (codebook[:-1] + codebook[1:]) / 2
    return torch.bucketize(scaled, midpoints)  # on a midpoint: the lower level


@dataclass
class NF4Tensor:
    """A quantized tensor: packed 4-bit codes plus what dequantization needs."""

    packed: torch.Tensor           # uint8 of shape (ceil(n/2), 1): two codes per byte, first in the high nibble
    absmax: torch.Tensor           # fp32 per block, or uint8 codes when double-quantized
    shape: torch.Size
    dtype: torch.dtype
    blocksize: int = BLOCKSIZE
    offset: torch.Tensor | None = None          # double quantization: mean of the fp32 absmax values
    absmax_absmax: torch.Tensor | None = None   # double quantization: fp32 scale per 256 absmax values

    @property
    def double_quant(self) -> bool:
        return self.offset is not None

    def nbytes(self) -> int:
        tensors = [self.packed, self.absmax] + ([self.offset, self.absmax_absmax] if self.double_quant else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def bits_per_parameter(self) -> float:
        return 8 * self.nbytes() / torch.Size(self.shape).numel()


def quantize_blockwise_8bit(x: torch.Tensor, blocksize: int = ABSMAX_BLOCKSIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit blockwise quantization with the dynamic map: (uint8 codes, fp32 absmax per block)."""
    absmax, scaled = _block_scale(x.reshape(-1).float(), blocksize)
    code = dynamic_codebook()
    return _nearest(scaled, code).to(torch.uint8), absmax


def dequantize_blockwise_8bit(codes: torch.Tensor, absmax: torch.Tensor, blocksize: int = ABSMAX_BLOCKSIZE) -> torch.Tensor:
    values = dynamic_codebook().to(codes.device)[codes.long()]
    return _times_block_scale(values, absmax, blocksize)


def _times_block_scale(values: torch.Tensor, absmax: torch.Tensor, blocksize: int) -> torch.Tensor:
    n = values.numel()
    if n % blocksize == 0:
        return (values.view(-1, blocksize) * absmax.unsqueeze(1)).view(-1)
    full = n - n % blocksize
    out = torch.empty(n, dtype=torch.float32, device=values.device)
    out[:full] = (values[:full].view(-1, blocksize) * absmax[: full // blocksize].unsqueeze(1)).reshape(-1)
    if full < n:
        out[full:] = values[full:] * absmax[-1]
    return out


def quantize_nf4(x: torch.Tensor, blocksize: int = BLOCKSIZE, double_quant: bool = False) -> NF4Tensor:
    """Quantize ``x`` (any float dtype and shape) to NF4 with blockwise absmax scaling."""
    if not x.is_floating_point():
        raise TypeError(f"NF4 quantizes floating-point tensors, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError("cannot quantize an empty tensor")
    if blocksize < 2 or blocksize % 2:
        raise ValueError(f"blocksize must be an even number >= 2, got {blocksize}")
    _check_finite(x)
    absmax, scaled = _block_scale(x.detach().reshape(-1).float(), blocksize)
    if scaled.numel() % 2:  # an odd count: pad with 0.0, whose code (the zero level) fills the last low nibble
        scaled = torch.cat([scaled, scaled.new_zeros(1)])
    codes = _nearest(scaled, nf4_codebook()).to(torch.uint8)
    packed = ((codes[0::2] << 4) | codes[1::2]).unsqueeze(1)
    q = NF4Tensor(packed=packed, absmax=absmax, shape=x.shape, dtype=x.dtype, blocksize=blocksize)
    if double_quant:
        q.offset = absmax.mean()
        q.absmax, q.absmax_absmax = quantize_blockwise_8bit(absmax - q.offset)
    return q


def block_scales(q: NF4Tensor) -> torch.Tensor:
    """The fp32 absmax per block (recovered from 8 bits when double-quantized)."""
    if not q.double_quant:
        return q.absmax
    return dequantize_blockwise_8bit(q.absmax, q.absmax_absmax) + q.offset


@lru_cache
def _byte_table(device: torch.device) -> torch.Tensor:
    """The two levels each of the 256 possible bytes unpacks to: (high nibble, low nibble).
    Kept once per device, so that a forward pass on a GPU does not copy it there each time."""
    byte = torch.arange(256)
    return torch.stack([nf4_codebook()[byte >> 4], nf4_codebook()[byte & 0xF]], dim=1).to(device)


def _unpack(packed: torch.Tensor, scales: torch.Tensor, table: torch.Tensor, blocksize: int, n: int,
            dtype: torch.dtype) -> torch.Tensor:
    # one row lookup per byte unpacks both nibbles (index_select: the fast gather on the CPU), then the block scales
    values = torch.index_select(table, 0, packed.view(-1).int()).view(-1)[:n]
    return _times_block_scale(values, scales, blocksize).to(dtype)


def dequantize_nf4(q: NF4Tensor) -> torch.Tensor:
    """Back to a tensor of the original shape and dtype: level * block absmax."""
    values = _unpack(q.packed, block_scales(q), _byte_table(q.packed.device), q.blocksize,
                     torch.Size(q.shape).numel(), q.dtype)
    return values.reshape(q.shape)


class _NF4MatMul(torch.autograd.Function):
    """The matrix product of an NF4Linear: ``x @ W.T + b`` with ``W`` dequantized in the forward pass and dequantized
    again in the backward pass. Autograd would otherwise keep the dequantized 16-bit weight of every layer until the
    backward pass: as much memory as the 16-bit model that quantizing saved. (bitsandbytes' ``MatMul4Bit`` does the
    same.)
    The weight is frozen, so the backward pass only needs the gradient of the input."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "NF4Linear", bias: torch.Tensor | None) -> torch.Tensor:
        ctx.layer = layer
        return nn.functional.linear(x, layer.dequantized_weight().to(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        weight = ctx.layer.dequantized_weight().to(grad_output.dtype)
        return grad_output @ weight, None, None


class NF4Linear(FrozenLinear):
    """A frozen linear layer stored in NF4: the weight is dequantized on the fly in each forward pass.

    Only the packed codes and scales are kept (as buffers, so they are never trained); the
    bias, if any, stays in full precision as bitsandbytes' ``Linear4bit`` keeps it.

    GPT-2's ``Conv1D`` (``x @ W + b``, ``W`` stored as (d_in, d_out)) is quantized as ``W.T``, the
    (d_out, d_in) weight of the ``nn.Linear`` it equals -- as transformers does when it loads GPT-2 in
    4 bits through bitsandbytes -- so that the layer then computes like any other. ``fan_in_fan_out``
    remembers where the weight came from: a LoRA adapter trained on it is saved for a Conv1D model.
    """

    def __init__(self, linear: nn.Linear, double_quant: bool = True, compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.fan_in_fan_out = is_conv1d(linear)
        weight = transpose(linear.weight.detach(), self.fan_in_fan_out)  # as nn.Linear's (d_out, d_in)
        self.out_features, self.in_features = weight.shape
        self.compute_dtype = compute_dtype or linear.weight.dtype
        self._store(quantize_nf4(weight, double_quant=double_quant))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def _store(self, q: NF4Tensor) -> None:
        self.weight_nf4 = q
        for name in ("packed", "absmax", "offset", "absmax_absmax"):
            value = getattr(q, name)
            if value is not None:
                self.register_buffer(f"nf4_{name}", value)

    @torch.no_grad()
    def store_weight(self, weight: torch.Tensor) -> None:
        """Replace the weight by a dense (d_out, d_in) one, quantized as this one was (this rounds)."""
        self._store(quantize_nf4(weight.to(self.weight_nf4.dtype), blocksize=self.weight_nf4.blocksize,
                                 double_quant=self.weight_nf4.double_quant))

    def _sync(self) -> NF4Tensor:
        for name in ("packed", "absmax", "offset", "absmax_absmax"):  # follow .to(device) moves of the buffers
            if hasattr(self, f"nf4_{name}"):
                setattr(self.weight_nf4, name, getattr(self, f"nf4_{name}"))
        return self.weight_nf4

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_nf4(self._sync())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return _NF4MatMul.apply(x.to(self.compute_dtype), self, bias).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"double_quant={self.weight_nf4.double_quant}, bits/param={self.weight_nf4.bits_per_parameter():.3f}")
