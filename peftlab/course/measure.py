"""Timing that can be compared: several variants measured side by side, interleaved, in one run.

On a shared CPU the speed of the machine drifts from second to second. Timing variant A
for a while and then variant B mixes that drift into the comparison; taking turns
(A, B, C, A, B, C, ...) and reporting the median of each spreads it evenly. Ratios
between variants measured this way are what the course and the benchmarks report;
absolute milliseconds depend on the machine.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


def _wait_for_the_gpu() -> None:
    """A GPU runs its work after the Python call that queued it has returned: wait for it, or a timer measures
    only the queueing. (Nothing to wait for on the CPU.)"""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def seconds_to_run(fn: Callable[[], object]) -> tuple[object, float]:
    """``(fn(), seconds it took)``, waiting for the GPU's queued work on both sides: a one-off timing."""
    _wait_for_the_gpu()
    start = time.perf_counter()
    result = fn()
    _wait_for_the_gpu()
    return result, time.perf_counter() - start


@dataclass(frozen=True)
class Ratio:
    """How many times as long variant a took as variant b, round by round: the median of the per-round ratios, and
    the middle half of them (25th-75th percentile). Both variants of a round ran back to back, so the machine's
    drift cancels in each ratio; how widely the ratios still scatter is the noise an assert's margin must clear."""

    median: float
    low: float
    high: float
    rounds: int

    def __str__(self) -> str:
        return f"{self.median:.2f}x (middle half of {self.rounds} rounds: {self.low:.2f}-{self.high:.2f}x)"


class Timings(dict):
    """Median seconds per call of each variant (a dict, name -> seconds), keeping every round's times for
    :meth:`ratio`."""

    def __init__(self, samples: dict[str, list[float]]):
        super().__init__({name: statistics.median(times) for name, times in samples.items()})
        self.samples = samples

    def ratio(self, a: str, b: str) -> Ratio:
        """``a``'s time over ``b``'s, round by round (see :class:`Ratio`)."""
        per_round = sorted(x / y for x, y in zip(self.samples[a], self.samples[b]))
        low, median, high = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else per_round * 3
        return Ratio(median=median, low=low, high=high, rounds=len(per_round))


def interleaved_medians(variants: dict[str, Callable[[], object]], repeats: int = 30, warmup: int = 3) -> Timings:
    """Median seconds per call of each variant, the variants called in turn ``repeats`` times."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            _wait_for_the_gpu()
            start = time.perf_counter()
            fn()
            _wait_for_the_gpu()
            samples[name].append(time.perf_counter() - start)
    return Timings(samples)


def forward_latency(models: dict[str, torch.nn.Module], input_ids: torch.Tensor, repeats: int = 30) -> Timings:
    """Median seconds of one no-grad forward pass of each model on the same batch (moved to each model's device)."""
    def runner(model):
        ids = input_ids.to(next(model.parameters()).device)

        def run():
            with torch.no_grad():
                model(input_ids=ids)
        return run

    for model in models.values():
        model.eval()
    return interleaved_medians({name: runner(m) for name, m in models.items()}, repeats=repeats)


def training_step(model: torch.nn.Module, batch: dict, lr: float = 1e-3, forward=None) -> Callable[[], None]:
    """A callable doing one AdamW step on ``batch`` (forward, backward, update), for timing."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    forward = forward or (lambda m, b: m(**b).loss)
    model.train()

    def step():
        forward(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def linear_calls(model: torch.nn.Module, input_ids: torch.Tensor) -> int:
    """How many ``nn.Linear`` layers one no-grad forward pass of ``model`` on ``input_ids`` runs.
    Timings move with whatever else the machine is doing; the work does not (chapter 02)."""
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        for hook in hooks:
            hook.remove()
    return len(calls)


def describe_machine(device: str | torch.device | None = None) -> dict:
    """What a measurement ran on, as every benchmark stores it beside its numbers: the device (None: the course's),
    its ``name`` (the GPU's, else the CPU model), the CPU model and cores, PyTorch's threads, and the versions of
    Python and of the libraries that are installed."""
    import importlib.metadata
    import os
    import platform
    from pathlib import Path

    from peftlab.course.model import course_device

    device = course_device() if device is None else torch.device(device)
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
              if line.startswith("model name")]
    cpu = models[0] if models else platform.processor() or platform.machine()
    described = {"device": str(device), "name": cpu, "cpu": cpu, "cpu_count": os.cpu_count(),
                 "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__}
    if device.type == "cuda":
        described["name"] = described["gpu"] = torch.cuda.get_device_name(device)
    for library in ("transformers", "peft", "bitsandbytes", "accelerate", "adapters"):
        try:
            described[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            pass
    return described
