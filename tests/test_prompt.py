"""Scratch prompt tuning against peft's PromptTuning: same prompt, same logits, files load both ways."""

import copy

import peft
import pytest
import torch

from peftlab import course_seed
from peftlab.core.inject import InjectionError
from peftlab.course.train import TrainConfig, evaluate, train
from peftlab.methods import prompt
from peftlab.production import add_prompt_peft, peft_prompt_weight

N = 5


@pytest.fixture
def base(make_tiny):
    return make_tiny()


def scratch_and_peft(base):
    scratch = copy.deepcopy(base)
    torch.manual_seed(0)
    prompt.add_prompt(scratch, prompt.PromptTuningConfig(num_virtual_tokens=N, init="random"))
    production = add_prompt_peft(copy.deepcopy(base), prompt.PromptTuningConfig(num_virtual_tokens=N))
    with torch.no_grad():
        peft_prompt_weight(production).copy_(prompt.soft_prompt_layer(scratch).prompt)
    return scratch, production


def test_same_prompt_same_logits_and_loss(base, tokens):
    scratch, production = scratch_and_peft(base)
    mask = torch.ones_like(tokens)
    mask[0, -3:] = 0  # padding is handled the same way
    labels = tokens.clone()
    with torch.no_grad():
        ours = scratch(input_ids=tokens, attention_mask=mask, labels=labels)
        theirs = production(input_ids=tokens, attention_mask=mask, labels=labels)
    assert ours.logits.shape[1] == tokens.shape[1]  # virtual positions are dropped from our output
    torch.testing.assert_close(ours.logits, theirs.logits[:, N:], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=0)


def test_trainable_parameters_are_n_times_d(base):
    scratch, production = scratch_and_peft(base)
    assert prompt.count_parameters(scratch)["trainable"] == N * 32 == production.get_nb_trainable_parameters()[0]


def test_saved_prompt_loads_in_peft_and_back(base, tokens, tmp_path):
    scratch, production = scratch_and_peft(base)
    prompt.save_prompt(scratch, tmp_path / "ours")
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=tokens).logits[:, N:], scratch(input_ids=tokens).logits,
                                   atol=1e-5, rtol=0)
    production.save_pretrained(tmp_path / "theirs")
    fresh = copy.deepcopy(base)
    prompt.load_prompt(fresh, tmp_path / "theirs")
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=tokens).logits, scratch(input_ids=tokens).logits, atol=1e-6, rtol=0)


def test_disabled_and_removed_equal_base(base, tokens):
    model = copy.deepcopy(base)
    prompt.add_prompt(model, prompt.PromptTuningConfig(num_virtual_tokens=N, init="random"))
    with torch.no_grad():
        expected = base(input_ids=tokens).logits
        assert not torch.allclose(model(input_ids=tokens).logits, expected, atol=1e-3)
        with prompt.disable_prompt(model):
            torch.testing.assert_close(model(input_ids=tokens).logits, expected, atol=0, rtol=0)
        prompt.remove_prompt(model)
        torch.testing.assert_close(model(input_ids=tokens).logits, expected, atol=0, rtol=0)


@pytest.mark.seeded
def test_only_the_prompt_trains_and_generate_works():
    from peftlab.course.model import load_base
    model, tokenizer = load_base()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(course_seed())
    prompt.add_prompt(model, prompt.PromptTuningConfig(num_virtual_tokens=8, init="vocab"), tokenizer=tokenizer)
    rows = [{"prompt": "12+5=", "answer": "17"}, {"prompt": "3+4=", "answer": "7"}]
    losses = train(model, tokenizer, rows * 4, TrainConfig(steps=100, lr=0.1, batch_size=8, seed=course_seed(), progress=False))
    assert losses[-1] < losses[0] / 4  # how far depends on the seed: with seed 2 it fell sevenfold, not tenfold
    for name, p in model.named_parameters():
        if "prompt" not in name:
            assert torch.equal(p, before[name.replace(".base_layer", "")]), name
    ids = tokenizer("12+5=", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, do_sample=False, use_cache=False, pad_token_id=tokenizer.pad_token_id)
    # generate runs through the prompt: its greedy answer is right exactly when the teacher-forced exact match says so
    # (whether 100 steps memorise both sums depends on the seed; that the two agree does not)
    right = evaluate(model, tokenizer, rows[:1])["accuracy"] == 1.0
    assert (tokenizer.decode(out[0, ids.shape[1]:]) == "17<|eos|>") == right
    with pytest.raises(ValueError, match="use_cache=False"):
        model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)


def test_nearest_tokens_reads_a_text_init_back(make_tiny):
    from peftlab.course.model import load_base
    model, tokenizer = load_base()
    prompt.add_prompt(model, prompt.PromptTuningConfig(num_virtual_tokens=3, init="text", init_text=" cat dog owl"),
                      tokenizer=tokenizer)
    readings = prompt.nearest_tokens(model, tokenizer)
    assert [r[0][0] for r in readings] == ["Ġcat", "Ġdog", "Ġowl"]
    assert all(r[0][1] == pytest.approx(1.0, abs=1e-4) for r in readings)


def test_bad_input(base, tmp_path):
    with pytest.raises(ValueError, match="positive integer"):
        prompt.PromptTuningConfig(num_virtual_tokens=0)
    with pytest.raises(ValueError, match="init_text"):
        prompt.PromptTuningConfig(init="text")
    with pytest.raises(ValueError, match="leaves no room in a context of 64 positions"):
        prompt.add_prompt(copy.deepcopy(base), prompt.PromptTuningConfig(num_virtual_tokens=64, init="random"))
    model = copy.deepcopy(base)
    prompt.add_prompt(model, prompt.PromptTuningConfig(num_virtual_tokens=50, init="random"))
    with pytest.raises(ValueError, match=r"50 virtual tokens \+ 20 input tokens exceed the model's context of 64"):
        model(input_ids=torch.zeros(1, 20, dtype=torch.long))
    with pytest.raises(InjectionError, match="already wrapped"):
        prompt.add_prompt(model, prompt.PromptTuningConfig(num_virtual_tokens=4, init="random"))
    small = copy.deepcopy(base)
    prompt.add_prompt(small, prompt.PromptTuningConfig(num_virtual_tokens=4, init="random"))
    prompt.save_prompt(small, tmp_path)
    from transformers import LlamaConfig, LlamaForCausalLM
    other = LlamaForCausalLM(LlamaConfig(vocab_size=257, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(ValueError, match=r"prompt_embeddings in .* has shape \(4, 32\) .* \(4, 48\)"):
        prompt.load_prompt(other, tmp_path)
