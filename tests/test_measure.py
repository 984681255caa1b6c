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
