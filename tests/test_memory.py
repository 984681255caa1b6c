import dataclasses
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from peftlab.core.inject import ALL_LINEAR
from peftlab.course.data import data_path
from peftlab import memory


def test_known_shapes_have_their_published_parameter_counts():
    published = {"Llama-2-7B": 6_738_415_616, "Llama-2-13B": 13_015_864_320, "LLaMA-33B": 32_528_943_616,
                 "LLaMA-65B": 65_285_660_672, "Llama-2-70B": 68_976_648_192,
                 "Llama-3.2-1B": 1_235_814_400, "Llama-3.2-3B": 3_212_749_824, "Llama-3.1-8B": 8_030_261_248}
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


def test_every_method_the_calculator_counts_is_one_the_course_runs_under_the_same_name():
    from peftlab.study.experiments import METHODS

    assert set(memory.METHOD_MEMORY) <= set(METHODS)


def test_trainable_counts_match_the_package_on_the_bundled_model():
    import copy

    from peftlab import load_base
    from peftlab.methods import bottleneck, ia3, lora, prompt

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
        assert memory.trainable_count(shape, method) == counted, method
    assert memory.trainable_count(shape, "full fine-tuning") == sum(p.numel() for p in base.parameters())


MEASUREMENTS = data_path("results", "gpu_memory.json")


def test_estimator_within_10_percent_of_every_measured_gpu_peak():
    """benchmarks/gpu_memory.py measured these peaks on an H200; the estimate must stay within 10% of each."""
    data = json.loads(MEASUREMENTS.read_text())
    assert len(data["rows"]) >= 36 and {r["set"] for r in data["rows"]} == {"calibration", "held out"}
    sizes = {r["model"] for r in data["rows"]}
    assert len(sizes) >= 3 and {r["method"] for r in data["rows"]} == {"full fine-tuning", "LoRA", "QLoRA"}
    assert {r["recipe"] for r in data["rows"] if r["set"] == "held out"} == set(memory.RECIPES), \
        "every recipe is checked on rows measured after its rules were written"
    fitted = [r for r in data["rows"] if not r.get("out_of_memory")]
    errors = []
    for r in fitted:
        estimate = memory.estimate_measured(r)
        errors.append((abs(estimate["peak"] / r["peak_bytes"] - 1), r["model"], r["recipe"], r["method"], r["seq"]))
    worst = max(errors)
    assert worst[0] < 0.10, f"estimate off by {worst[0]:.1%} for {worst[1:]}"
    # a row that ran out of memory has no peak; the calculator must at least say it needs more than any that fitted
    largest_fitted = max(r["peak_bytes"] for r in fitted)
    for r in data["rows"]:
        if r.get("out_of_memory"):
            assert memory.estimate_measured(r)["peak"] > largest_fitted, (r["model"], r["recipe"], r["method"])


def test_every_measured_combination_is_in_the_data_and_labelled():
    """memory.MEASURED (what the explorer and the command call measured) is exactly what gpu_memory.json holds."""
    rows = json.loads(MEASUREMENTS.read_text())["rows"]
    in_data = {(r["recipe"], "bf16", r["method"], r["optimizer"]) for r in rows if not r.get("out_of_memory")}
    assert in_data == memory.MEASURED
    shape = memory.ModelShape.known("Llama-2-7B")
    assert memory.training_memory(shape, "QLoRA")["measured"]
    assert not memory.training_memory(shape, "IA3")["measured"]
    assert not memory.training_memory(shape, "LoRA", dtype="fp32")["measured"]


def test_recipes_count_what_they_store():
    shape = memory.ModelShape.known("Llama-2-7B")
    n = shape.parameters()
    bnb = memory.estimate(shape, "full fine-tuning")
    torch_adamw = memory.estimate(shape, "full fine-tuning", optimizer="torch AdamW")
    assert bnb["optimizer states"] == 8 * n and torch_adamw["optimizer states"] == 4 * n, "torch keeps bf16 moments"
    step = memory.training_memory(shape, "full fine-tuning", optimizer="torch AdamW")
    assert step["parts"]["optimizer step (temporary)"] == 2 * n  # foreach: one more bf16 copy during the step
    mixed = memory.estimate(shape, "full fine-tuning", optimizer="torch AdamW", recipe="fp32 + bf16 autocast")
    assert mixed["weights"] == 4 * n and mixed["gradients"] == 4 * n and mixed["optimizer states"] == 8 * n
    lora_mixed = memory.training_memory(shape, "LoRA", recipe="fp32 + bf16 autocast")
    assert lora_mixed["parts"]["bf16 weight copies"] == 2 * (shape.linear_parameters() + shape.vocab * shape.hidden)
    plain = memory.estimate(shape, "QLoRA")
    prepared = memory.estimate(shape, "QLoRA", recipe="peft QLoRA")
    not_quantized = n - shape.linear_parameters()
    assert prepared["weights"] - plain["weights"] == 2 * not_quantized, "prepare_model_for_kbit_training: fp32, not bf16"
    long = dict(seq=4096, batch=4)
    assert memory.training_memory(shape, "QLoRA", recipe="peft QLoRA", **long)["peak"] > \
        memory.training_memory(shape, "LoRA", **long)["peak"], "peft's QLoRA recipe can take more than bf16 LoRA"
    with pytest.raises(ValueError, match="unknown recipe 'qlora'"):
        memory.training_memory(shape, "QLoRA", recipe="qlora")
    with pytest.raises(ValueError, match="counted for QLoRA only, not 'LoRA'"):
        memory.training_memory(shape, "LoRA", recipe="peft QLoRA")
    with pytest.raises(ValueError, match="fixes its dtypes"):
        memory.training_memory(shape, "LoRA", recipe="fp32 + bf16 autocast", dtype="fp32")


def test_training_memory_parts_and_bad_input():
    shape = memory.ModelShape.known("Llama-2-7B")
    lora = memory.training_memory(shape, "LoRA", seq=2048)
    qlora = memory.training_memory(shape, "QLoRA", seq=2048)
    assert qlora["parts"]["activations"] == lora["parts"]["activations"], "the same activations on a 4-bit base"
    assert qlora["peak"] < lora["peak"]
    checkpointed = memory.training_memory(shape, "QLoRA", seq=2048, gradient_checkpointing=True)
    assert checkpointed["parts"]["activations"] < qlora["parts"]["activations"] / 10
    assert memory.training_memory(shape, "full fine-tuning", optimizer="AdamW 8-bit")["peak"] < \
        memory.training_memory(shape, "full fine-tuning")["peak"]
    for method in memory.METHOD_MEMORY:
        assert memory.training_memory(shape, method)["peak"] > 0
    fp32 = memory.training_memory(shape, "full fine-tuning", dtype="fp32")
    assert fp32["parts"]["weights"] == 2 * memory.training_memory(shape, "full fine-tuning")["parts"]["weights"]
    paged = memory.training_memory(shape, "LoRA", optimizer="paged AdamW 8-bit")
    assert "optimizer states (paged)" in paged["parts"]
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        memory.training_memory(shape, "LoRA", dtype="int8")
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        memory.training_memory(shape, "LoRA", optimizer="adam")
    with pytest.raises(ValueError, match="seq must be a positive integer"):
        memory.training_memory(shape, "LoRA", seq=0)
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        memory.training_memory(shape, "LoRA", batch=-1)
    with pytest.raises(ValueError, match="unknown method"):
        memory.training_memory(shape, "LORA")


def test_command_line_reports_and_refuses_clearly(capsys, tmp_path):
    from peftlab.cli import main

    assert main(["memory", "--model", "Llama-2-7B", "--method", "QLoRA", "--seq", "2048", "--gpu", "24"]) == 0
    out = capsys.readouterr().out
    assert "activations" in out and "peak (estimated)" in out and "fits a 24 GB GPU" in out
    assert "recipe '16-bit'" in out and "measured: this method" in out
    assert main(["memory", "--model", "Llama-2-7B", "--method", "QLoRA", "--recipe", "peft QLoRA",
                 "--optimizer", "torch AdamW"]) == 0
    assert "prepare_model_for_kbit_training" in capsys.readouterr().out
    assert main(["memory", "--model", "Llama-2-7B", "--method", "IA3"]) == 0
    assert "NOT MEASURED" in capsys.readouterr().out
    assert main(["memory", "--model", "Llama-2-7B", "--method", "LoRA", "--recipe", "peft QLoRA"]) == 2
    assert "counted for QLoRA only" in capsys.readouterr().err
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                                  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}))
    assert main(["memory", "--config", str(config), "--method", "full fine-tuning"]) == 0
    assert main(["memory", "--layers", "2", "--hidden", "64", "--intermediate", "128", "--heads", "3",
                 "--vocab", "100"]) == 2
    assert "heads (3) must divide hidden (64)" in capsys.readouterr().err
    assert main(["memory", "--model", "Llama-2-7B", "--layers", "3"]) == 2
    assert "describe the model one way" in capsys.readouterr().err
    assert main(["memory", "--config", str(tmp_path / "missing.json")]) == 2
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"hidden_size": 64}))
    assert main(["memory", "--config", str(partial)]) == 2
    assert "lacks num_hidden_layers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["memory", "--model", "Llama-2-7B", "--method", "lora"])  # argparse names the valid choices


def test_a_config_with_head_dim_counts_its_wider_attention():
    """Qwen3-0.6B's published config: 16 heads of 128 on a hidden size of 1024 (q_proj is 1024 -> 2048)."""
    qwen3 = memory.ModelShape.from_config({
        "num_hidden_layers": 28, "hidden_size": 1024, "intermediate_size": 3072, "num_attention_heads": 16,
        "num_key_value_heads": 8, "vocab_size": 151936, "tie_word_embeddings": True, "head_dim": 128})
    assert qwen3.linear_shapes()["q_proj"] == (1024, 2048) and qwen3.linear_shapes()["o_proj"] == (2048, 1024)
    assert round(qwen3.parameters() / 1e9, 2) == 0.60  # without head_dim it came out at 0.51B


def test_a_rank_above_what_a_layer_allows_is_refused_as_add_lora_refuses_it(capsys):
    from peftlab.cli import main

    with pytest.raises(ValueError, match=r"LoRA rank r=100000 is larger than q_proj \(4096x4096\) allows"):
        memory.ModelShape.known("Llama-2-7B").lora_parameters(r=100000)
    assert main(["memory", "--model", "Llama-2-7B", "--r", "100000"]) == 2
    assert "larger than q_proj" in capsys.readouterr().err
    assert main(["memory", "--model", "Llama-2-7B", "--method", "QLoRA", "--r", "16"]) == 0
    assert "QLoRA (r=16 on q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)" in capsys.readouterr().out


def test_a_file_that_is_not_json_a_nested_text_config_and_gpu_sizes(capsys, tmp_path):
    from peftlab.cli import main

    (tmp_path / "notes.txt").write_text("not json")
    assert main(["memory", "--config", str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt is not a JSON file" in capsys.readouterr().err
    language = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                "vocab_size": 100}
    assert memory.ModelShape.from_config({"text_config": language}) == memory.ModelShape.from_config(language)
    assert main(["memory", "--model", "Llama-2-7B", "--gpu", "nan"]) == 2
    assert "--gpu must be a finite number above 0" in capsys.readouterr().err


def test_a_shape_round_trips_through_a_transformers_config():
    """One way to write a published shape (ModelShape): the GPU benchmark builds its models from to_config()."""
    for name, shape in memory.KNOWN_SHAPES.items():
        assert memory.ModelShape.from_config(shape.to_config()) == shape, name
        built = memory.ModelShape.from_config(LlamaConfig(**shape.to_config()))  # transformers fills in head_dim
        assert built == dataclasses.replace(shape, head_dim=shape.hidden // shape.heads), name
    wide = memory.ModelShape(2, 64, 128, 4, 2, 100, head_dim=32)
    assert memory.ModelShape.from_config(wide.to_config()) == wide
