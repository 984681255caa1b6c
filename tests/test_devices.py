"""Every scratch method runs where the model is, whichever device it was on when the method was added
(benchmarks/device_check.py; on an H200 its output is in docs/benchmarks.md). On a machine without CUDA the same
checks run CPU against CPU, which still covers the order of the steps: a method added to a model, or a model
moved after its method was added; a seed gives the same initial weights either way."""

import importlib.util
from pathlib import Path

import pytest
import torch

from peftlab.methods import bottleneck, lora, nf4

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("device_check", ROOT / "benchmarks" / "device_check.py")
device_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(device_check)


def test_every_scratch_method_on_the_cpu_whichever_order(capsys):
    assert device_check.main(["--device", "cpu"]) == 0, capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_every_scratch_method_on_cuda(capsys):
    assert device_check.main(["--device", "cuda"]) == 0, capsys.readouterr().out


def test_lora_draws_its_start_from_the_cpu_generator_whatever_the_device():
    """A is drawn by the CPU's generator, then moved: so a seed gives the same A on any device. Seen from the
    CPU: building LoRA on a "meta" base advances the CPU generator exactly as building it on a CPU base does."""
    def next_draw_after_lora(device):
        base = torch.nn.Linear(16, 8, device=device)
        torch.manual_seed(0)
        layer = lora.LoRALinear(base, lora.LoraConfig(r=4))
        assert layer.lora_A.weight.device.type == device
        return torch.rand(1).item()

    assert next_draw_after_lora("meta") == next_draw_after_lora("cpu")


def test_nf4_quantizes_values_on_any_device_with_its_cpu_codebooks():
    x = torch.randn(4, 64)
    q = nf4.quantize_nf4(x, double_quant=True)
    assert torch.equal(nf4.dequantize_nf4(q), nf4.dequantize_nf4(nf4.quantize_nf4(x.clone(), double_quant=True)))
    assert nf4._byte_table(torch.device("cpu")) is nf4._byte_table(torch.device("cpu")), "one table per device, kept"


def test_adapters_on_a_meta_model_allocate_nothing():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    bottleneck.add_adapter(model, "task")
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_the_course_device_is_the_gpu_when_present_unless_told(monkeypatch):
    from peftlab.course.model import course_device

    monkeypatch.delenv("PEFTLAB_DEVICE", raising=False)
    assert course_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("PEFTLAB_DEVICE", "cpu")
    assert course_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("PEFTLAB_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="PyTorch sees none"):
            course_device()


def test_load_base_puts_the_model_on_the_course_device_or_the_one_asked(monkeypatch):
    from peftlab.course.model import load_base

    monkeypatch.setenv("PEFTLAB_DEVICE", "cpu")
    model, _ = load_base()
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    model, _ = load_base(device="meta")  # any device PyTorch knows; meta holds no values, so this costs nothing
    assert {p.device.type for p in model.parameters()} == {"meta"}
    with pytest.raises(ValueError, match="device_map"):
        load_base(device="cpu", device_map={"": "cpu"})


def test_collate_and_forward_latency_follow_the_model_device():
    from peftlab.course.measure import forward_latency
    from peftlab.course.model import load_base
    from peftlab.course.tasks import load_task
    from peftlab.course.train import collate

    model, tokenizer = load_base(device="meta")  # a second device on any machine: shapes only, no values
    rows = load_task("addition", "validation")[:4]
    assert {v.device.type for v in collate(tokenizer, rows).values()} == {"cpu"}
    assert {v.device.type for v in collate(tokenizer, rows, device="meta").values()} == {"meta"}
    seen = []

    def record_and_stop(module, args, kwargs):  # the meta model cannot run: see what it is given, then stop
        seen.append(kwargs["input_ids"].device.type)
        raise StopIteration

    model.register_forward_pre_hook(record_and_stop, with_kwargs=True)
    with pytest.raises(StopIteration):
        forward_latency({"base": model}, collate(tokenizer, rows)["input_ids"], repeats=1)
    assert seen == ["meta"], "the CPU batch is moved to where the model is"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_every_codebook_round_trip_runs_on_cuda_as_on_the_cpu():
    x = torch.randn(8, 256)
    for name in nf4.CODEBOOKS:
        assert torch.equal(nf4.quantize_dequantize(x.cuda(), name, 64).cpu(), nf4.quantize_dequantize(x, name, 64))
