import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from peftlab import memory
from peftlab.inject import ALL_LINEAR


def test_known_shapes_have_their_published_parameter_counts():
    published = {"Llama-2-7B": 6_738_415_616, "Llama-2-13B": 13_015_864_320, "LLaMA-33B": 32_528_943_616,
                 "LLaMA-65B": 65_285_660_672, "Llama-2-70B": 68_976_648_192}
    for name, count in published.items():
        assert memory.ModelShape.known(name).parameters() == count, name


def test_counts_match_a_transformers_model_and_lora():
    config = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=8,
                         num_key_value_heads=2, vocab_size=300)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    shape = memory.ModelShape.from_config(config)
    assert shape.parameters() == sum(p.numel() for p in model.parameters())
    assert shape.lora_parameters(4, ("q_proj", "v_proj")) == 3 * 4 * ((64 + 64) + (64 + 16))


def test_full_fine_tuning_of_65b_is_the_papers_780_gb():
    parts = memory.estimate(memory.ModelShape.known("LLaMA-65B"), "full fine-tuning")
    assert memory.total_gb(parts) == pytest.approx(12 * 65.286, rel=1e-3)  # > 780 GB, as QLoRA's paper says


def test_qlora_weights_take_about_4_127_bits_and_lora_states_16_bytes_each():
    shape = memory.ModelShape.known("Llama-2-7B")
    q = memory.estimate(shape, "QLoRA")
    bits = 8 * (q["weights"] + q["quantization constants"] - 2 * (shape.parameters() - shape.linear_parameters()))
    assert bits / shape.linear_parameters() == pytest.approx(4.127, abs=1e-3)
    lora = memory.estimate(shape, "LoRA", r=8, targets=ALL_LINEAR)
    assert lora["trainable (32-bit)"] + lora["gradients"] + lora["optimizer states"] == 16 * shape.lora_parameters(8)
    no_dq = memory.estimate(shape, "QLoRA", double_quant=False)
    assert no_dq["quantization constants"] == pytest.approx(shape.linear_parameters() * 0.5 / 8)


def test_bad_shapes_and_methods_are_refused_clearly():
    with pytest.raises(ValueError, match="heads \\(3\\) must divide hidden \\(64\\)"):
        memory.ModelShape(2, 64, 128, 3, 3, 100)
    with pytest.raises(ValueError, match="layers must be a positive integer"):
        memory.ModelShape(0, 64, 128, 4, 4, 100)
    with pytest.raises(ValueError, match="kv_heads"):
        memory.ModelShape(2, 64, 128, 4, 3, 100)
    with pytest.raises(ValueError, match="unknown method 'lora'"):
        memory.estimate(memory.ModelShape.known("Llama-2-7B"), "lora")
    with pytest.raises(ValueError, match="unknown model"):
        memory.ModelShape.known("GPT-5")
    with pytest.raises(ValueError, match="unknown target"):
        memory.ModelShape.known("Llama-2-7B").lora_parameters(8, ("qproj",))


def test_trainable_counts_match_the_package_on_the_bundled_model():
    import copy

    from peftlab import bottleneck, ia3, lora, load_base, prompt

    base, tokenizer = load_base()
    shape = memory.ModelShape.from_config(base.config)
    builders = {"LoRA": lambda m: lora.add_lora(m, lora.LoraConfig(r=8, target_modules=ALL_LINEAR)),
                "IA3": lambda m: ia3.add_ia3(m),
                "adapter (Houlsby)": lambda m: bottleneck.add_adapter(m, "a", bottleneck.AdapterConfig("houlsby")),
                "adapter (Pfeiffer)": lambda m: bottleneck.add_adapter(m, "a", bottleneck.AdapterConfig("pfeiffer")),
                "prompt tuning": lambda m: prompt.add_prompt(m, prompt.PromptTuningConfig(16), tokenizer=tokenizer)}
    for method, build in builders.items():
        model = copy.deepcopy(base)
        build(model)
        counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert shape.trainable_parameters(method) == counted, method
    assert shape.trainable_parameters("full fine-tuning") == sum(p.numel() for p in base.parameters())
