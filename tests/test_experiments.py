import pytest

from peftlab import course_seed
from peftlab.study.experiments import METHODS, run


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="LoRA"):
        run("LoRa", "sentiment")


def test_a_method_refuses_an_option_it_does_not_take_and_honours_those_it_takes():
    """The registry once dropped options without a word: run("QLoRA", ..., alpha=16) trained with alpha 2r = 128,
    and run("IA3", ..., r=64) ignored r."""
    from peftlab import load_base
    from peftlab.methods import lora
    from peftlab.study.experiments import apply_method

    with pytest.raises(ValueError, match="IA3 does not take r; it takes target_modules, feedforward_modules"):
        run("IA3", "sentiment", r=64)
    with pytest.raises(ValueError, match="adapter \\+ LoRA does not take n; it takes no options"):
        run("adapter + LoRA", "sentiment", n=4)
    model, tokenizer = load_base()
    apply_method("QLoRA", model, tokenizer, r=64, alpha=16, targets=("q_proj",))
    layers = lora.lora_layers(model)
    assert len(layers) == 4 and {layer.scaling for _, layer in layers} == {16 / 64}
    assert all(name.endswith("q_proj") for name, _ in layers)


def test_a_run_reports_what_the_chapters_tabulate():
    result = run("IA3", "sentiment", steps=5, eval_limit=20)
    assert result["trainable"] == 4 * (64 + 64 + 384)
    assert len(result["losses"]) == 5 and 0 <= result["accuracy"] <= 1
    assert set(METHODS) >= {"full fine-tuning", "LoRA", "IA3", "prompt tuning", "QLoRA"}


@pytest.mark.seeded
def test_run_to_convergence_stops_when_validation_stalls_and_scores_the_best_checkpoint():
    import torch

    from peftlab.study.experiments import run_to_convergence

    # lr 0.3 makes LoRA diverge at once: the best validation loss is an early one, and patience 2 stops the run
    result = run_to_convergence("LoRA", "addition", lr=0.3, seed=course_seed(), eval_every=10, patience=2, max_steps=200)
    curve = result["curve"]
    assert curve[0]["step"] == 0 and [c["step"] for c in curve] == list(range(0, 10 * len(curve), 10))
    assert result["stopped_early"] and result["steps_run"] == result["best_step"] + 20 < 200
    assert result["val_loss"] == min(c["loss"] for c in curve)
    assert len(result["train_loss_per_interval"]) == result["steps_run"] // 10
    assert {"test_loss", "test_accuracy", "trainable", "train_seconds"} <= set(result)
    assert not any(isinstance(v, torch.nn.Module) for v in result.values())


def test_train_stops_when_its_callback_says_so():
    from peftlab import LoraConfig, TrainConfig, add_lora, load_base, load_task, train

    model, tokenizer = load_base()
    add_lora(model, LoraConfig())
    seen = []
    losses = train(model, tokenizer, load_task("addition"), TrainConfig(steps=50, progress=False),
                   callback=lambda step, m: seen.append(step) or step == 7)
    assert len(losses) == 7 and seen == list(range(1, 8))


def test_run_to_convergence_refuses_settings_that_cannot_stop():
    from peftlab.study.experiments import run_to_convergence

    with pytest.raises(ValueError, match="max_steps >= eval_every"):
        run_to_convergence("LoRA", "addition", eval_every=100, max_steps=50)
