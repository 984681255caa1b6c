"""Every method, applied to the bundled model, learns a course task in a few dozen steps."""

import pytest
import torch

from peftlab import ALL_LINEAR, course_seed, load_base, load_task
from peftlab.course.train import TrainConfig, evaluate, train
from peftlab.methods import bottleneck, ia3, lora, prompt, qlora

METHODS = {
    "lora": (lambda m, tok: lora.add_lora(m, lora.LoraConfig(target_modules=ALL_LINEAR)), 3e-3),
    "ia3": (lambda m, tok: ia3.add_ia3(m), 3e-2),
    "adapter-houlsby": (lambda m, tok: bottleneck.add_adapter(m, "t", bottleneck.AdapterConfig("houlsby")), 3e-3),
    "adapter-pfeiffer": (lambda m, tok: bottleneck.add_adapter(m, "t", bottleneck.AdapterConfig("pfeiffer")), 3e-3),
    "prompt": (lambda m, tok: prompt.add_prompt(m, prompt.PromptTuningConfig(16), tokenizer=tok), 1e-1),
    "qlora": (lambda m, tok: qlora.add_qlora(m), 3e-3),
}


@pytest.mark.seeded
@pytest.mark.parametrize("method", METHODS)
def test_method_learns_the_sentiment_format(method):
    add, lr = METHODS[method]
    torch.manual_seed(course_seed())
    model, tokenizer = load_base()
    add(model, tokenizer)
    val = load_task("sentiment", "validation")[:100]
    before = evaluate(model, tokenizer, val)["loss"]
    losses = train(model, tokenizer, load_task("sentiment"), TrainConfig(steps=60, lr=lr, seed=course_seed(), progress=False))
    after = evaluate(model, tokenizer, val)["loss"]
    assert losses[-1] < losses[0] / 3
    assert after < before / 3, (before, after)
