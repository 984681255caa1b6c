"""Scratch NF4 against bitsandbytes' CPU kernels: same codebook, same bytes, same scales, same values."""

import bitsandbytes.functional as bnbf
import pytest
import torch

from peftlab.methods import nf4

SHAPES = [(64,), (128, 64), (33, 17), (5, 3, 7), (1000,), (130, 129)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def sample(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 0.05).to(dtype)


def test_codebook_from_normal_quantiles_equals_bitsandbytes_table():
    ours = nf4.nf4_codebook()
    theirs = bnbf.get_4bit_type("nf4", device="cpu")
    assert ours.dtype == torch.float32 and ours.shape == (16,)
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    assert (ours > 0).sum() == 8 and (ours < 0).sum() == 7 and (ours == 0).sum() == 1


def test_dynamic_map_equals_bitsandbytes():
    torch.testing.assert_close(nf4.dynamic_codebook(), bnbf.create_dynamic_map(signed=True), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bytes_scales_and_values_equal_bitsandbytes(shape, dtype):
    x = sample(shape, dtype)
    ours = nf4.quantize_nf4(x)
    packed, state = bnbf.quantize_4bit(x, blocksize=64, quant_type="nf4")
    assert torch.equal(ours.packed, packed), "packed bytes differ"
    assert torch.equal(ours.absmax, state.absmax), "block scales differ"
    theirs = bnbf.dequantize_4bit(packed, state).reshape(shape)  # bitsandbytes returns (1, n) for 1-D input
    torch.testing.assert_close(nf4.dequantize_nf4(ours), theirs, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(128, 64), (300, 70), (1000,), (4096, 64)], ids=str)
def test_double_quantization_against_bitsandbytes(shape, dtype):
    """Where we match bitsandbytes exactly, and precisely where and how much we differ.

    Identical: the packed 4-bit codes, the mean subtracted from the absmax values (offset),
    and the fp32 scale of each block of 256 absmax values. Different: bitsandbytes' CPU kernel
    for the 8-bit step does not always return the *nearest* level of its dynamic map. Its
    choice is never closer than ours; it differs in well under 1% of absmax values, by one
    level except next to zero (up to 4 levels, where the map's levels are 1e-6 apart).
    """
    codebook = nf4.dynamic_codebook()
    for seed in range(5):
        x = sample(shape, dtype, seed=seed)
        ours = nf4.quantize_nf4(x, double_quant=True)
        packed, state = bnbf.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True)
        assert torch.equal(ours.packed, packed)
        torch.testing.assert_close(ours.offset, state.offset, atol=0, rtol=0)
        torch.testing.assert_close(ours.absmax_absmax, state.state2.absmax, atol=0, rtol=0)

        target = nf4.quantize_nf4(x).absmax - ours.offset       # what the 8-bit step encodes
        scale = ours.absmax_absmax.repeat_interleave(256)[: target.numel()]
        err_ours = (codebook[ours.absmax.long()] * scale - target).abs()
        err_bnb = (codebook[state.absmax.long()] * scale - target).abs()
        assert (err_ours <= err_bnb + 1e-9).all(), "ours is the nearest level everywhere"
        steps = (ours.absmax.int() - state.absmax.int()).abs()
        assert int((steps > 0).sum()) <= max(1, 0.01 * steps.numel())
        assert steps.max() <= 4
        assert (steps[codebook[ours.absmax.long()].abs() > 1e-3] <= 1).all()

        # the reconstructed weights therefore differ by at most one 8-bit step of a block's scale
        diff = (nf4.dequantize_nf4(ours).float() - bnbf.dequantize_4bit(packed, state).float().reshape(shape)).abs()
        gap = (codebook[1:] - codebook[:-1]).max() * ours.absmax_absmax.max()
        assert diff.max() <= gap + 2 ** -7 * x.float().abs().max()


def test_bits_per_parameter():
    x = sample((4096, 256), torch.float16)
    plain, double = nf4.quantize_nf4(x), nf4.quantize_nf4(x, double_quant=True)
    assert plain.bits_per_parameter() == pytest.approx(4 + 32 / 64)
    assert double.bits_per_parameter() == pytest.approx(4 + 8 / 64 + 32 / (64 * 256) + 32 / x.numel())


def test_quantization_error_is_small_relative_to_the_weights():
    x = sample((256, 256), torch.float32)
    err = (nf4.dequantize_nf4(nf4.quantize_nf4(x)) - x).pow(2).mean().sqrt() / x.pow(2).mean().sqrt()
    assert 0.05 < err < 0.15


def test_zero_block_and_bad_input():
    x = torch.zeros(128)
    x[64:] = 1.0
    torch.testing.assert_close(nf4.dequantize_nf4(nf4.quantize_nf4(x)), x, atol=0, rtol=0)
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = torch.ones(10, 10)
        y[3, 4] = bad
        with pytest.raises(ValueError, match=r"1 NaN or infinite values \(the first at index \(3, 4\)\)"):
            nf4.quantize_nf4(y)
    with pytest.raises(TypeError, match="floating-point"):
        nf4.quantize_nf4(torch.ones(4, dtype=torch.int64))


def test_nf4_linear_matches_bitsandbytes_linear4bit():
    import bitsandbytes as bnb

    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 64)
    ours = nf4.NF4Linear(linear, double_quant=True)
    theirs = bnb.nn.Linear4bit(128, 64, quant_type="nf4", compress_statistics=True, compute_dtype=torch.float32)
    theirs.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                      compress_statistics=True)
    theirs.bias = torch.nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    theirs.support_avx512bf16_for_cpu = False
    theirs._parameters["weight"] = theirs.weight._quantize("cpu")
    x = torch.randn(3, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)
