"""How sure is a difference? Spreads over seeds, and intervals over resampled texts.

    Spread.of([0.95, 0.97, 0.92, 0.96, 0.94])   # mean, min-max and a 95% interval over 5 seeds
    paired_interval(per_text_a, per_text_b)     # 95% interval of loss(a) - loss(b) over the same texts

A finding ("A beats B") needs a difference larger than what chance alone moves. The course
uses two yardsticks: over training seeds, the range (min-max) of each configuration; and over
evaluation texts, a paired bootstrap: resample the texts with replacement, recompute both losses
on the same sample, and read the 2.5% and 97.5% quantiles of their difference.

The course's one rule for comparing two configurations trained over the same seeds
(``Spread.compare``; chapter 00's glossary says the same):

- **beats** / **loses to**: the ranges do not overlap, so every seed of one did better than every
  seed of the other;
- **not separated from**: the ranges overlap, so these seeds cannot tell the two apart. That is
  not a finding that they are equal: more seeds may still separate them (ranges only widen as
  seeds are added, so the rule never turns "not separated" into a difference on its own), and
  ``Spread.difference`` gives the gaps, seed by seed, that the data leave open.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch

NOT_SEPARATED = "not separated from"  # the verdict where two ranges over seeds overlap (see the rule above)

# Student's t quantile for a two-sided 95% interval, by degrees of freedom (n - 1 seeds); beyond 30, ~1.96
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        15: 2.131, 20: 2.086, 30: 2.042}


@dataclass(frozen=True)
class Spread:
    """Values of one configuration over seeds: mean, range, and a 95% t-interval for the mean."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values) -> "Spread":
        values = tuple(float(v) for v in values)
        if not values:
            raise ValueError("a spread needs at least one value")
        return cls(values)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def interval(self) -> tuple[float, float]:
        """95% interval for the mean (Student's t); needs two values or more."""
        if self.n < 2:
            raise ValueError("an interval needs at least two seeds")
        dof = self.n - 1
        t = T_95[max(k for k in T_95 if k <= dof)] if dof <= 30 else 1.96
        half = t * statistics.stdev(self.values) / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    def overlaps(self, other: "Spread") -> bool:
        """Whether the two ranges (min-max) share a point: then these seeds cannot separate the two."""
        return self.low <= other.high and other.low <= self.high

    def compare(self, other: "Spread", higher_is_better: bool = True) -> str:
        """The course's verdict on two configurations (the module docstring's rule): "not separated from" where the
        ranges overlap, else "beats" or "loses to" (pass ``higher_is_better=False`` for losses)."""
        if self.overlaps(other):
            return NOT_SEPARATED
        return "beats" if (self.mean > other.mean) == higher_is_better else "loses to"

    def difference(self, other: "Spread") -> "Spread":
        """``self - other`` seed by seed: both must hold the same seeds in the same order (a study's runs, sorted by
        seed). Its range is the gap the data leave open; a range that includes 0 separates nothing."""
        if self.n != other.n:
            raise ValueError(f"a seed-by-seed difference needs the same seeds on both sides; got {self.n} and {other.n}")
        return Spread.of(a - b for a, b in zip(self.values, other.values))

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.mean:{spec}} ({self.low:{spec}}-{self.high:{spec}})"


def paired_interval(a: torch.Tensor, b: torch.Tensor, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of loss(a) - loss(b), resampling the same texts for both.

    ``a`` and ``b``: one row per text, ``(summed loss, token count)``, as
    :func:`peftlab.course.train.text_losses` returns; a loss is a ratio of sums over the sampled texts.
    """
    if a.shape != b.shape or a.dim() != 2 or a.shape[1] != 2:
        raise ValueError(f"need two (texts, 2) tables of the same texts; got shapes {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    pick = torch.randint(len(a), (resamples, len(a)), generator=torch.Generator().manual_seed(seed))
    loss_a = a[pick, 0].sum(1) / a[pick, 1].sum(1)
    loss_b = b[pick, 0].sum(1) / b[pick, 1].sum(1)
    low, high = torch.quantile((loss_a - loss_b).double(), torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(low), float(high)
