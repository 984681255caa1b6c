"""Fixtures shared by the tests: a tiny random Llama, a batch of tokens, and two helpers (tests take
them as fixtures, never by importing this file)."""

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "seeded: asserts a training result; it trains with course_seed(), and "
                                       "benchmarks/test_seeds.py stores its outcome for seeds 0-4 (data/results/test_seeds.json)")


def tiny_llama(seed: int = 0):
    """A random Llama small enough for exact comparisons in milliseconds (no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def make_tiny():
    return tiny_llama


@pytest.fixture
def tokens():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 257, (3, 11), generator=g)


def _changed_by_training(model, steps: int = 3) -> set[str]:
    """Names of the parameters that a few AdamW steps on random tokens changed."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randint(0, 257, (4, 10), generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def _randomize_lora_B(model, seed: int = 1):
    """B starts at zero (identity); give it values so that comparisons test the LoRA path too."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.fixture
def changed_by_training():
    return _changed_by_training


@pytest.fixture
def randomize_lora_B():
    return _randomize_lora_B
