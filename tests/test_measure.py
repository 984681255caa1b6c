import pytest

from peftlab.course.measure import interleaved_medians


def test_interleaved_medians_takes_turns():
    calls = []
    medians = interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                  repeats=3, warmup=1)
    assert set(medians) == {"a", "b"} and all(v >= 0 for v in medians.values())
    assert calls == ["a", "b"] + ["a", "b"] * 3


def test_repeats_must_be_positive():
    with pytest.raises(ValueError):
        interleaved_medians({"a": lambda: None}, repeats=0)


def test_a_ratio_is_taken_round_by_round():
    """Each round's two times are divided before the median: a machine that slows down for a whole round (both
    variants) leaves that round's ratio as it was."""
    from peftlab.course.measure import Timings

    timings = Timings({"a": [2.0, 20.0, 2.2, 2.0], "b": [1.0, 10.0, 1.0, 1.0]})
    assert timings["a"] == 2.1 and timings["b"] == 1.0  # still a dict of medians
    ratio = timings.ratio("a", "b")
    assert ratio.rounds == 4 and (ratio.low, ratio.median, ratio.high) == pytest.approx((2.0, 2.0, 2.15))
    assert str(ratio) == "2.00x (middle half of 4 rounds: 2.00-2.15x)"


def test_linear_calls_counts_the_layers_a_forward_pass_runs():
    import torch

    from peftlab.course.measure import linear_calls

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.a, self.b = torch.nn.Embedding(5, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, input_ids):
            return self.b(self.a(self.a(self.embed(input_ids))))

    model = Two()
    assert linear_calls(model, torch.tensor([[1, 2]])) == 3  # a twice, b once
    assert not model.a._forward_hooks, "the counting hooks are removed"


def test_the_course_seed_is_zero_unless_chosen(monkeypatch):
    from peftlab import course_seed

    monkeypatch.delenv("PEFTLAB_SEED", raising=False)
    assert course_seed() == 0
    monkeypatch.setenv("PEFTLAB_SEED", "3")
    assert course_seed() == 3
    monkeypatch.setenv("PEFTLAB_SEED", "three")
    with pytest.raises(ValueError, match=r"PEFTLAB_SEED='three': give a whole number"):
        course_seed()
