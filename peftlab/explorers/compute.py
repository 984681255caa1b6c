"""The computations behind the course's explorers: plain functions of tensors and results.

The widgets in ``peftlab.explorers.widgets`` only call these and draw what they return, so everything
an explorer shows can be computed, printed and tested without a screen.
"""

from __future__ import annotations

import math

import torch

from peftlab.methods.nf4 import CODEBOOKS, quantize_dequantize


# -- rank: how much of a matrix r directions capture -----------------------------------------

def rank_profile(matrix: torch.Tensor) -> dict:
    """Singular values of ``matrix`` (also relative to the largest) and the share of its energy (squared Frobenius
    norm) that the best rank-r approximation keeps, for every r."""
    if matrix.dim() != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(matrix.shape)}")
    s = torch.linalg.svdvals(matrix.detach().double())
    energy = (s ** 2).cumsum(0) / (s ** 2).sum().clamp(min=1e-300)
    values = s.float().tolist()
    top = values[0] or 1.0  # a zero matrix: every value is 0, and stays 0
    return {"singular_values": values, "relative": [v / top for v in values], "energy_kept": energy.float().tolist(),
            "shape": tuple(matrix.shape)}


def rank_summary(profile: dict, r: int) -> dict:
    """What rank ``r`` keeps of a profiled matrix, and what a LoRA update of that rank costs."""
    n = len(profile["singular_values"])
    if not 1 <= r <= n:
        raise ValueError(f"rank must be between 1 and {n} for a {profile['shape']} matrix, got {r}")
    out_features, in_features = profile["shape"]
    kept = profile["energy_kept"][r - 1]
    return {"r": r, "energy_kept": kept, "relative_error": math.sqrt(max(0.0, 1 - kept)),
            "lora_parameters": r * (in_features + out_features), "dense_parameters": in_features * out_features}


# -- learning rate: which rate works for which method -------------------------------------------

def smooth(values: list[float], window: int = 10) -> list[float]:
    """Trailing moving average (the first points average what there is so far)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def lr_table(results: list[dict]) -> dict[str, dict]:
    """Group sweep results (dicts with method, lr, loss and losses) by method: rates sorted, the
    validation loss at each, and the best rate (lowest validation loss; a diverged run's NaN never wins)."""
    if not results:
        raise ValueError("no sweep results: run the sweep first")
    table: dict[str, dict] = {}
    for row in results:
        missing = {"method", "lr", "loss", "losses"} - set(row)
        if missing:
            raise ValueError(f"a sweep result lacks {sorted(missing)}: {sorted(row)}")
        entry = table.setdefault(row["method"], {"lrs": [], "val_loss": [], "curves": []})
        entry["lrs"].append(row["lr"])
        entry["val_loss"].append(row["loss"])
        entry["curves"].append(smooth(row["losses"]))
    for entry in table.values():
        order = sorted(range(len(entry["lrs"])), key=entry["lrs"].__getitem__)
        for key in ("lrs", "val_loss", "curves"):
            entry[key] = [entry[key][i] for i in order]
        finite = [(loss, lr) for loss, lr in zip(entry["val_loss"], entry["lrs"]) if math.isfinite(loss)]
        entry["best_lr"] = min(finite)[1] if finite else None
    return table


# -- quantization: codebook, block size, error ----------------------------------------------------

def quantization_error(weight: torch.Tensor, codebook: str = "NF4", blocksize: int = 64) -> float:
    """Relative root-mean-square error of ``weight`` after a 4-bit round trip: |W - Q(W)| / |W|."""
    w = weight.detach().float()
    return ((quantize_dequantize(w, codebook, blocksize) - w).norm() / w.norm().clamp(min=1e-30)).item()


def quantization_errors(weights: dict[str, torch.Tensor], codebooks=tuple(CODEBOOKS),
                        blocksizes=(16, 64, 256, 1024, 4096)) -> dict[str, dict[int, float]]:
    """Error of each codebook at each block size over all ``weights`` together (norms pooled)."""
    if not weights:
        raise ValueError("no weights given")
    floats = [w.detach().float() for w in weights.values()]
    squared_norm = sum(w.pow(2).sum() for w in floats)
    out: dict[str, dict[int, float]] = {}
    for name in codebooks:
        out[name] = {}
        for blocksize in blocksizes:
            squared_error = sum((quantize_dequantize(w, name, blocksize) - w).pow(2).sum() for w in floats)
            out[name][blocksize] = math.sqrt(squared_error / squared_norm)
    return out


def scaled_block_values(weight: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """Weight values divided by their block's absmax: what a codebook's 16 levels must cover."""
    flat = weight.detach().float().reshape(-1)
    n = flat.numel() - flat.numel() % blocksize
    if n == 0:
        return flat / flat.abs().max().clamp(min=1e-30)
    blocks = flat[:n].view(-1, blocksize)
    return (blocks / blocks.abs().max(dim=1, keepdim=True).values.clamp(min=1e-30)).reshape(-1)


def block_histogram(weight: torch.Tensor, blocksize: int = 64, bins: int = 80) -> tuple[list[float], list[float]]:
    """The block-scaled values of ``weight`` (``scaled_block_values``) as a histogram over [-1, 1]: the bins' centres
    and the share of values in each."""
    counts = torch.histc(scaled_block_values(weight, blocksize), bins=bins, min=-1, max=1)
    centers = torch.linspace(-1 + 1 / bins, 1 - 1 / bins, bins)
    return centers.tolist(), (counts / counts.sum()).tolist()
