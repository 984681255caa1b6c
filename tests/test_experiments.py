import pytest

from peftlab.tools.experiments import METHODS, run


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="LoRA"):
        run("LoRa", "sentiment")


def test_a_run_reports_what_the_chapters_tabulate():
    result = run("IA3", "sentiment", steps=5, eval_limit=20)
    assert result["trainable"] == 4 * (64 + 64 + 384)
    assert len(result["losses"]) == 5 and 0 <= result["accuracy"] <= 1
    assert set(METHODS) >= {"full fine-tuning", "LoRA", "IA3", "prompt tuning", "QLoRA"}
