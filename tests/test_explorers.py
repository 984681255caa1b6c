"""The explorers' computations (peftlab.explorers.compute) and widgets (peftlab.explorers.widgets), driven as a reader would."""

import math

import pytest
import torch

from peftlab.methods import nf4
from peftlab.explorers import compute, widgets


def test_rank_profile_of_a_rank_two_matrix():
    torch.manual_seed(0)
    m = torch.randn(20, 2) @ torch.randn(2, 30)
    profile = compute.rank_profile(m)
    assert len(profile["singular_values"]) == 20
    assert profile["energy_kept"][1] == pytest.approx(1.0, abs=1e-6)
    assert profile["energy_kept"][0] < 0.999
    summary = compute.rank_summary(profile, 2)
    assert summary["relative_error"] < 1e-3
    assert summary["lora_parameters"] == 2 * (20 + 30) and summary["dense_parameters"] == 600
    with pytest.raises(ValueError, match="between 1 and 20"):
        compute.rank_summary(profile, 21)
    with pytest.raises(ValueError, match="2-D"):
        compute.rank_profile(torch.zeros(3))


def test_smooth_and_lr_table_pick_the_lowest_finite_loss():
    assert compute.smooth([1, 2, 3, 4], window=2) == [1, 1.5, 2.5, 3.5]
    rows = [{"method": "a", "lr": 1e-2, "loss": 0.5, "losses": [1, 1]},
            {"method": "a", "lr": 1e-3, "loss": 0.7, "losses": [1, 1]},
            {"method": "a", "lr": 1e-1, "loss": float("nan"), "losses": [1, float("nan")]},
            {"method": "b", "lr": 1e-3, "loss": 0.2, "losses": [1, 0.5]}]
    table = compute.lr_table(rows)
    assert table["a"]["lrs"] == [1e-3, 1e-2, 1e-1] and table["a"]["best_lr"] == 1e-2
    assert table["b"]["best_lr"] == 1e-3
    with pytest.raises(ValueError, match="lacks"):
        compute.lr_table([{"method": "a", "lr": 1}])
    with pytest.raises(ValueError, match="run the sweep"):
        compute.lr_table([])


def test_codebooks_match_bitsandbytes_tables():
    bnb_functional = pytest.importorskip("bitsandbytes.functional")
    fp4 = sorted(set(bnb_functional.get_4bit_type("fp4", device="cpu").tolist()))
    assert nf4.fp4_codebook().tolist() == pytest.approx(fp4)
    # bitsandbytes' "int4" table is the integers -7..7 (its get_4bit_type cannot normalise an integer list)
    assert nf4.int4_codebook().tolist() == pytest.approx([k / 7 for k in range(-7, 8)])


def test_fp4_round_trip_equals_bitsandbytes():
    bnb_functional = pytest.importorskip("bitsandbytes.functional")
    torch.manual_seed(0)
    x = torch.randn(64, 130)
    q, state = bnb_functional.quantize_4bit(x, blocksize=64, quant_type="fp4")
    assert torch.equal(bnb_functional.dequantize_4bit(q, state, quant_type="fp4"), nf4.quantize_dequantize(x, "FP4", 64))


def test_quantize_dequantize_nf4_equals_the_packed_path_and_rejects_bad_input():
    torch.manual_seed(0)
    x = torch.randn(33, 70)
    assert torch.equal(nf4.quantize_dequantize(x, "NF4", 64), nf4.dequantize_nf4(nf4.quantize_nf4(x, 64)))
    with pytest.raises(ValueError, match="unknown codebook 'nf3'"):
        nf4.quantize_dequantize(x, "nf3")
    with pytest.raises(ValueError, match="blocksize"):
        nf4.quantize_dequantize(x, "NF4", 0)


def test_quantization_errors_shrink_with_smaller_blocks_and_nf4_beats_int4_on_normal_weights():
    torch.manual_seed(0)
    w = {"w": torch.randn(256, 256) * 0.02}
    errors = compute.quantization_errors(w, blocksizes=(16, 64, 4096))
    for name in errors:
        assert errors[name][16] < errors[name][64] < errors[name][4096]
    assert errors["NF4"][64] < errors["int4"][64] and errors["NF4"][64] < errors["FP4"][64]
    assert compute.quantization_error(w["w"], "NF4", 64) == pytest.approx(errors["NF4"][64], rel=1e-5)
    scaled = compute.scaled_block_values(w["w"], 64)
    assert scaled.abs().max() == pytest.approx(1.0) and scaled.numel() == 256 * 256


def _sweep():
    rows = []
    for method, best in (("LoRA", 3e-3), ("full fine-tuning", 1e-3)):
        for lr in (1e-4, 1e-3, 3e-3, 1e-1):
            loss = abs(math.log10(lr) - math.log10(best)) + 0.1
            rows.append({"method": method, "lr": lr, "loss": loss, "losses": [2.0 - i * loss / 50 for i in range(30)]})
    rows.append({"method": "prompt tuning", "lr": 0.3, "loss": float("nan"), "losses": [1.0, float("nan")]})
    return rows


def test_lr_explorer_moves_with_its_controls():
    explorer = widgets.lr_explorer(_sweep())
    assert "LoRA" in explorer.status.value and "best rate for LoRA in this sweep: 0.003" in explorer.status.value
    selected = explorer.figure.data[explorer.figure.data.index(next(t for t in explorer.figure.data
                                                                    if t.name == "selected"))]
    before = (tuple(selected.x), tuple(selected.y))
    explorer.controls["lr"].value = 1e-1
    after = (tuple(selected.x), tuple(selected.y))
    assert before != after and after[0] == (1e-1,)
    explorer.controls["method"].value = "full fine-tuning"
    assert "full fine-tuning" in explorer.status.value and "0.001" in explorer.status.value
    assert explorer.controls["lr"].value == 1e-1  # the rate is kept when the new method has it
    explorer.controls["method"].value = "prompt tuning"  # every run diverged: no crash, a message
    assert "diverged" in explorer.status.value
    assert repr(explorer).startswith("learning-rate explorer")


def test_rank_explorer_moves_with_its_controls():
    torch.manual_seed(0)
    explorer = widgets.rank_explorer({"a": torch.randn(16, 24), "b": torch.randn(8, 8)})
    marker = explorer.figure.data[3]
    explorer.controls["r"].value = 2
    y2 = marker.y[0]
    explorer.controls["r"].value = 12
    assert marker.x == (12,) and marker.y[0] > y2
    assert len(explorer.figure.data[0].x) == 12
    explorer.controls["matrix"].value = "b"  # a smaller matrix: the slider's range follows, no error
    assert explorer.controls["r"].max == 8 and explorer.controls["r"].value <= 8
    assert "b</b> 8×8" in explorer.status.value
    with pytest.raises(ValueError):
        widgets.rank_explorer({})


def test_quantization_explorer_moves_with_its_controls():
    torch.manual_seed(0)
    explorer = widgets.quantization_explorer({"w": torch.randn(64, 64), "v": torch.randn(32, 96) * 0.1})
    levels = explorer.figure.data[1]
    assert len(set(levels.x)) == 16 or len(set(levels.x)) == 15
    nf4_levels = tuple(levels.x)
    explorer.controls["codebook"].value = "int4"
    assert tuple(levels.x) != nf4_levels and "int4" in explorer.status.value
    histogram = tuple(explorer.figure.data[0].y)
    explorer.controls["blocksize"].value = 4096
    assert tuple(explorer.figure.data[0].y) != histogram
    assert explorer.figure.data[-1].x == (4096,)
    for name in ("v", "w"):
        for codebook in nf4.CODEBOOKS:
            for blocksize in explorer.controls["blocksize"].options:
                explorer.controls["weight"].value = name
                explorer.controls["codebook"].value = codebook
                explorer.controls["blocksize"].value = blocksize  # every offered value works
    assert "relative error" in explorer.status.value


def test_memory_explorer_moves_with_its_controls():
    explorer = widgets.memory_explorer()
    assert "QLoRA" in explorer.status.value and "GB" in explorer.status.value
    bars = explorer.figure.data[0]
    before = tuple(bars.x)
    explorer.controls["checkpointing"].value = True
    assert tuple(bars.x) != before, "checkpointing shrinks the activations bar"
    explorer.controls["model"].value = "LLaMA-65B"
    explorer.controls["gpu"].value = 24
    assert "does not fit" in explorer.status.value
    explorer.controls["gpu"].value = 141
    for method in explorer.controls["method"].options:  # every offered value works
        for optimizer in explorer.controls["optimizer"].options:
            explorer.controls["method"].value = method
            explorer.controls["optimizer"].value = optimizer
    explorer.controls["dtype"].value = "fp32"
    explorer.controls["seq"].value = 8192
    explorer.controls["batch"].value = 16
    assert explorer.figure.data[4].y == (141, 141)
    assert "never measured on a GPU" in explorer.status.value, "fp32 weights were never measured: the status says so"
    explorer.controls["dtype"].value = "bf16"
    explorer.controls["optimizer"].value = "AdamW 32-bit"
    explorer.controls["method"].value = "QLoRA"
    assert "measured on a GPU (estimate within 10%)" in explorer.status.value
    explorer.controls["method"].value = "IA3"
    assert "never measured on a GPU" in explorer.status.value
    explorer.controls["recipe"].value = "peft QLoRA"
    assert "Not counted" in explorer.status.value and "QLoRA only" in explorer.status.value
    explorer.controls["method"].value = "QLoRA"
    explorer.controls["optimizer"].value = "torch AdamW"
    assert "GB" in explorer.status.value and "measured on a GPU (estimate" in explorer.status.value
    assert explorer.figure.data[1].x == () and len(explorer.figure.data[3].x) > 0, "only QLoRA's curve for its recipe"


@pytest.mark.parametrize("make, control, value", [
    (lambda: widgets.lr_explorer(_sweep()), "lr", 1e-1),
    (lambda: widgets.rank_explorer({"a": torch.randn(16, 24)}), "r", 3),
    (lambda: widgets.quantization_explorer({"w": torch.randn(64, 64)}), "codebook", "int4"),
    (lambda: widgets.memory_explorer(), "batch", 8)], ids=["lr", "rank", "quantization", "memory"])
def test_explorer_offers_its_picture_to_viewers_that_run_no_kernel(make, control, value):
    """A stored explorer output carries the live widget, a PNG of its picture as it stands (what
    GitHub or a static site shows) and the text line; moving a control redraws the picture."""
    import base64
    import io
    from PIL import Image

    torch.manual_seed(0)
    explorer = make()
    bundle = explorer._repr_mimebundle_()
    assert {"application/vnd.jupyter.widget-view+json", "image/png", "text/plain"} <= set(bundle)
    png = base64.b64decode(bundle["image/png"])
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (720, 302)
    assert 5_000 < len(png) < 80_000, "a picture, not a blank, and small enough to store in a notebook"
    colours = image.convert("RGB").getcolors(maxcolors=100_000)
    assert len(colours) > 20, "more than a frame: traces are drawn"
    explorer.controls[control].value = value
    assert explorer.picture() != png, "the picture follows the controls"
