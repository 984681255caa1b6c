"""The course's methods on the architectures learners bring (Llama, Mistral, Qwen2, Gemma, Phi-3, GPT-2,
BERT): what each supports, and the adapters it saves."""

import copy
import functools
import json
from pathlib import Path

import adapters
import peft
import pytest
import torch
from transformers import (BertConfig, BertModel, GemmaConfig, GemmaForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

from peftlab.core.architectures import peft_task_type
from peftlab.core.inject import InjectionError, find_targets, is_conv1d
from peftlab.methods import bottleneck as bn
from peftlab.methods import ia3, lora, nf4, prompt, qlora


def test_saved_adapters_carry_the_task_type_of_their_model(tmp_path):
    """A BERT encoder cannot generate: its adapter is saved without a task type, and peft loads it and computes
    what the scratch LoRA computes; a causal LM's adapter says CAUSAL_LM, as before."""
    torch.manual_seed(0)
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                vocab_size=100)).eval()
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, vocab_size=100))
    assert peft_task_type(bert) is None and peft_task_type(llama) == "CAUSAL_LM"
    base = copy.deepcopy(bert)
    lora.add_lora(bert, lora.LoraConfig(r=4, target_modules=("query", "value")))
    with torch.no_grad():
        for _, layer in lora.lora_layers(bert):
            layer.lora_B.weight.normal_()  # a trained-looking adapter, so that loading it matters
    folder = lora.save_lora(bert, tmp_path / "bert")
    assert json.loads((folder / "adapter_config.json").read_text())["task_type"] is None
    loaded = peft.PeftModel.from_pretrained(base, folder).eval()
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).last_hidden_state, bert(input_ids=ids).last_hidden_state, atol=1e-5)


def _gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64)).eval()


def test_lora_on_gpt2_conv1d_equals_peft_and_round_trips(tmp_path):
    """GPT-2's projections are Conv1D (weight stored transposed): the scratch LoRA wraps them as peft does with
    fan_in_fan_out, computes the same, merges into the transposed weight, and saves what peft loads (both ways)."""
    base = _gpt2()
    ours = copy.deepcopy(base)
    lora.add_lora(ours, lora.LoraConfig(r=4, target_modules=("c_attn", "c_proj")))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn", "c_proj"],
                                                                      fan_in_fan_out=True, init_lora_weights=False))
    with torch.no_grad():
        for path, layer in lora.lora_layers(ours):
            peft_layer = theirs.base_model.model.get_submodule(path)
            layer.lora_A.weight.copy_(peft_layer.lora_A["default"].weight)
            layer.lora_B.weight.copy_(peft_layer.lora_B["default"].weight)
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        wanted = theirs(input_ids=ids).logits
        assert torch.allclose(ours(input_ids=ids).logits, wanted, atol=1e-5)
        folder = lora.save_lora(ours, tmp_path / "gpt2")
        assert json.loads((folder / "adapter_config.json").read_text())["fan_in_fan_out"] is True
        loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), folder).eval()
        assert torch.allclose(loaded(input_ids=ids).logits, wanted, atol=1e-5)
        theirs.save_pretrained(tmp_path / "from_peft")
        back = copy.deepcopy(base)
        lora.load_lora(back, tmp_path / "from_peft")
        assert torch.allclose(back(input_ids=ids).logits, wanted, atol=1e-5)
        lora.merge_lora(ours)
        assert torch.allclose(ours(input_ids=ids).logits, wanted, atol=1e-5), "merged equals unmerged"


# --- every method on every architecture ------------------------------------------------------------------------------
# Tiny random models (hidden 32, 2 layers, vocabulary 100) of the seven architectures above; each test compares
# the scratch method with peft or AdapterHub where they support the pair, and checks the clear error where it cannot
# apply. ARCHS: name -> (model, LoRA targets).

DECODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=100,
               max_position_embeddings=64)
ARCHS = {
    "llama": (lambda: LlamaForCausalLM(LlamaConfig(**DECODER, num_key_value_heads=2)), ("q_proj", "v_proj")),
    "mistral": (lambda: MistralForCausalLM(MistralConfig(**DECODER, num_key_value_heads=2)), ("q_proj", "v_proj")),
    "qwen2": (lambda: Qwen2ForCausalLM(Qwen2Config(**DECODER, num_key_value_heads=2)), ("q_proj", "v_proj")),  # biased q/k/v
    "gemma": (lambda: GemmaForCausalLM(GemmaConfig(**DECODER, num_key_value_heads=2, head_dim=8)), ("q_proj", "v_proj")),
    "phi3": (lambda: Phi3ForCausalLM(Phi3Config(**DECODER, pad_token_id=0)), ("qkv_proj", "gate_up_proj")),  # fused
    "gpt2": (lambda: GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64)),
             ("c_attn", "c_proj")),  # Conv1D
    "bert": (lambda: BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=64, vocab_size=100)), ("query", "value")),  # encoder
}
ADAPTERHUB_SUPPORTS = ("llama", "mistral", "gpt2", "bert")  # AdapterHub 1.3 has no Qwen2, Gemma or Phi-3 classes


@functools.lru_cache
def _base(arch):
    torch.manual_seed(0)
    return ARCHS[arch][0]().eval()


def base_model(arch):
    """A fresh copy of the architecture's tiny random model (built once per run)."""
    return copy.deepcopy(_base(arch))


def output(model, ids, **kwargs):
    """What the model computes per token: a causal LM's logits, an encoder's last hidden state."""
    with torch.no_grad():
        out = model(input_ids=ids, **kwargs)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


IDS = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(0))


def assert_same(a, b, atol=1e-5):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.allclose(a, b, atol=atol), float((a - b).abs().max())


def peft_trainable(model):
    return model.get_nb_trainable_parameters()[0]


def randomize(model, marker, seed=1, scale=0.3, around=0.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if marker in name:
                p.copy_(around + scale * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_equals_peft_and_round_trips(arch, tmp_path):
    base, targets = base_model(arch), ARCHS[arch][1]
    ours = copy.deepcopy(base)
    lora.add_lora(ours, lora.LoraConfig(r=2, target_modules=targets))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=2, lora_alpha=16, target_modules=list(targets), fan_in_fan_out=arch == "gpt2", init_lora_weights=False,
        task_type=peft_task_type(base)))
    with torch.no_grad():
        for path, layer in lora.lora_layers(ours):
            peft_layer = theirs.base_model.model.get_submodule(path)
            layer.lora_A.weight.copy_(peft_layer.lora_A["default"].weight)
            layer.lora_B.weight.copy_(peft_layer.lora_B["default"].weight)
    wanted = output(theirs, IDS)
    assert_same(output(ours, IDS), wanted)
    assert lora.count_parameters(ours)["trainable"] == peft_trainable(theirs)
    folder = lora.save_lora(ours, tmp_path / "ours")
    assert json.loads((folder / "adapter_config.json").read_text())["task_type"] == peft_task_type(base)
    assert_same(output(peft.PeftModel.from_pretrained(copy.deepcopy(base), folder), IDS), wanted)
    theirs.save_pretrained(tmp_path / "theirs")
    back = copy.deepcopy(base)
    lora.load_lora(back, tmp_path / "theirs")
    assert_same(output(back, IDS), wanted)
    with lora.disable_lora(ours):
        assert torch.equal(output(ours, IDS), output(base, IDS))


@pytest.mark.parametrize("arch", ARCHS)
def test_ia3_equals_peft_and_round_trips(arch, tmp_path):
    """Default targets by model type, as peft's table has them (Phi-3: not in peft's table; peftlab's choice, qkv_proj
    and down_proj, passed to peft explicitly). Conv1D (GPT-2) and fused qkv_proj (Phi-3) are scaled as peft scales them."""
    base = base_model(arch)
    ours = copy.deepcopy(base)
    ia3.add_ia3(ours)
    randomize(ours, ".ia3_l", around=1.0)
    config = ours.peftlab_ia3_config
    explicit = {} if arch in peft.utils.constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING else dict(
        target_modules=list(config.target_modules), feedforward_modules=list(config.feedforward_modules))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.IA3Config(task_type=peft_task_type(base), **explicit))
    with torch.no_grad():
        for path, layer in ia3.ia3_layers(ours):
            peft_vector = theirs.base_model.model.get_submodule(path).ia3_l["default"]
            peft_vector.copy_(layer.ia3_l.reshape(peft_vector.shape))
    wanted = output(theirs, IDS)
    assert not torch.allclose(wanted, output(base, IDS), atol=1e-3)
    assert_same(output(ours, IDS), wanted)
    assert ia3.count_parameters(ours)["trainable"] == peft_trainable(theirs)
    folder = ia3.save_ia3(ours, tmp_path / "ours")
    assert_same(output(peft.PeftModel.from_pretrained(copy.deepcopy(base), folder), IDS), wanted)
    theirs.save_pretrained(tmp_path / "theirs")
    back = copy.deepcopy(base)
    ia3.load_ia3(back, tmp_path / "theirs")
    assert_same(output(back, IDS), wanted)
    with ia3.disable_ia3(ours):
        assert torch.equal(output(ours, IDS), output(base, IDS))
    ia3.fold_ia3(ours)  # into nn.Linear rows/columns, or the swapped axes of a Conv1D weight
    assert_same(output(ours, IDS), wanted)


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_tuning_equals_peft_and_round_trips(arch, tmp_path):
    """Through model.get_input_embeddings(): GPT-2's and BERT's learned positions run over prompt and text, as in
    peft; BERT (no head) is peft's FEATURE_EXTRACTION. peft returns the virtual positions too; we drop them."""
    n, base = 3, base_model(arch)
    ours = copy.deepcopy(base)
    prompt.add_prompt(ours, prompt.PromptTuningConfig(num_virtual_tokens=n, init="random"))
    task_type = peft_task_type(base) or "FEATURE_EXTRACTION"
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.PromptTuningConfig(task_type=task_type, num_virtual_tokens=n))
    with torch.no_grad():
        theirs.prompt_encoder["default"].embedding.weight.copy_(prompt.soft_prompt_layer(ours).prompt)
    mask = torch.ones_like(IDS)
    mask[0, -3:] = 0
    wanted = output(theirs, IDS, attention_mask=mask)[:, n:]
    assert_same(output(ours, IDS, attention_mask=mask), wanted)
    assert prompt.count_parameters(ours)["trainable"] == peft_trainable(theirs) == n * 32
    folder = prompt.save_prompt(ours, tmp_path / "ours")
    assert json.loads((folder / "adapter_config.json").read_text())["task_type"] == task_type
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), folder)
    assert_same(output(loaded, IDS, attention_mask=mask)[:, n:], wanted)
    theirs.save_pretrained(tmp_path / "theirs")
    back = copy.deepcopy(base)
    prompt.load_prompt(back, tmp_path / "theirs")
    assert_same(output(back, IDS, attention_mask=mask), wanted)
    with prompt.disable_prompt(ours):
        assert torch.equal(output(ours, IDS, attention_mask=mask), output(base, IDS, attention_mask=mask))


def test_prompt_tuning_extends_bert_token_types():
    """The virtual tokens are segment 0 and the text keeps its segments (peft drops token_type_ids instead)."""
    base = base_model("bert")
    model = copy.deepcopy(base)
    prompt.add_prompt(model, prompt.PromptTuningConfig(num_virtual_tokens=3, init="random"))
    zeros, second = torch.zeros_like(IDS), torch.ones_like(IDS)
    assert torch.equal(output(model, IDS, token_type_ids=zeros), output(model, IDS))
    assert not torch.allclose(output(model, IDS, token_type_ids=second), output(model, IDS), atol=1e-3)
    layer = prompt.soft_prompt_layer(model)
    embeds = torch.cat([layer.prompt.detach()[None].expand(2, -1, -1), base.get_input_embeddings()(IDS)], dim=1)
    types = torch.cat([torch.zeros(2, 3, dtype=torch.long), second], dim=1)
    with torch.no_grad():
        by_hand = base(inputs_embeds=embeds, token_type_ids=types).last_hidden_state[:, 3:]
    assert torch.equal(output(model, IDS, token_type_ids=second), by_hand)


def _adapterhub(base, placement):
    hub = copy.deepcopy(base)
    adapters.init(hub)
    config = {"houlsby": adapters.DoubleSeqBnConfig, "pfeiffer": adapters.SeqBnConfig}[placement]
    hub.add_adapter("task", config=config(reduction_factor=4))
    hub.train_adapter("task")
    return hub.eval()


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("arch", ARCHS)
def test_bottleneck_adapters_equal_adapterhub(arch, placement):
    """Same weights, same outputs as AdapterHub where it supports the model (GPT-2 and BERT have their own
    placements, BERT Pfeiffer re-normalising with the layer's LayerNorm); Qwen2, Gemma and Phi-3 get Llama's
    placement and are checked for identity start and switching off only."""
    base = base_model(arch)
    ours = copy.deepcopy(base)
    bn.add_adapter(ours, "task", bn.AdapterConfig(placement=placement, reduction_factor=4, init="identity"))
    assert torch.equal(output(ours, IDS), output(base, IDS))  # W_up = 0: exactly the base
    randomize(ours, ".adapters.task.")
    assert not torch.allclose(output(ours, IDS), output(base, IDS), atol=1e-3)
    with bn.disable_adapters(ours):
        assert torch.equal(output(ours, IDS), output(base, IDS))
    if arch not in ADAPTERHUB_SUPPORTS:
        return
    hub = _adapterhub(base, placement)
    # AdapterHub keeps one adapter after attention and one after the MLP per layer (Houlsby), or the latter only
    # (Pfeiffer), in model order, as peftlab's slots are.
    hub_adapters = [m for path, m in hub.named_modules() if path.endswith("adapters.task")]
    slots = [slot.adapters["task"] for _, slot in bn.adapter_slots(ours)]
    assert len(hub_adapters) == len(slots) == (4 if placement == "houlsby" else 2)
    with torch.no_grad():
        for theirs, mine in zip(hub_adapters, slots):
            for their_layer, my_layer in ((theirs.adapter_down[0], mine.down), (theirs.adapter_up, mine.up)):
                their_layer.weight.copy_(my_layer.weight)
                their_layer.bias.copy_(my_layer.bias)
    assert_same(output(ours, IDS), output(hub, IDS))
    assert bn.count_parameters(ours)["trainable"] == sum(p.numel() for p in hub.parameters() if p.requires_grad)


def _quantized_reference(base, targets):
    """The base model with each target weight replaced by dequantize(quantize(W)), quantized as (d_out, d_in):
    for a Conv1D, W.T, and put back transposed."""
    reference = copy.deepcopy(base)
    with torch.no_grad():
        for _, module in find_targets(reference, targets):
            conv = is_conv1d(module)
            w = module.weight.T if conv else module.weight
            w_q = nf4.dequantize_nf4(nf4.quantize_nf4(w, double_quant=True))
            module.weight.copy_(w_q.T if conv else w_q)
    return reference


@pytest.mark.parametrize("arch", ARCHS)
def test_qlora_computes_lora_on_the_dequantized_weights(arch, tmp_path):
    """NF4 base + LoRA equals LoRA on a model whose weights are dequantize(quantize(W)); GPT-2's Conv1D is quantized
    transposed. The adapter is saved for the unquantized model: peft loads it there."""
    base, targets = base_model(arch), ARCHS[arch][1]
    ours = copy.deepcopy(base)
    qlora.add_qlora(ours, lora.LoraConfig(r=2, target_modules=targets))
    randomize(ours, ".lora_B.", scale=0.1)
    reference = _quantized_reference(base, targets)
    lora.add_lora(reference, lora.LoraConfig(r=2, target_modules=targets))
    with torch.no_grad():
        for (_, mine), (_, theirs) in zip(lora.lora_layers(ours), lora.lora_layers(reference)):
            theirs.lora_A.weight.copy_(mine.lora_A.weight)
            theirs.lora_B.weight.copy_(mine.lora_B.weight)
    assert_same(output(ours, IDS), output(reference, IDS))
    folder = lora.save_lora(ours, tmp_path / "qlora")
    assert json.loads((folder / "adapter_config.json").read_text())["fan_in_fan_out"] == (arch == "gpt2")
    full = copy.deepcopy(base)
    lora.load_lora(full, folder)
    assert_same(output(peft.PeftModel.from_pretrained(copy.deepcopy(base), folder), IDS), output(full, IDS))


def _gpt2_4bit_through_transformers(base, folder):
    """``base`` saved and loaded back by transformers through bitsandbytes, NF4 without double quantization."""
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig

    base.save_pretrained(folder)
    hub = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=False,
        bnb_4bit_compute_dtype=torch.float32)).eval()
    for layer in hub.modules():
        if isinstance(layer, bnb.nn.Linear4bit):
            layer.support_avx512bf16_for_cpu = False  # see peftlab.production.avoid_bitsandbytes_cpu_eval_trap
    return hub


def test_qlora_on_gpt2_equals_bitsandbytes_and_peft(tmp_path):
    """transformers quantizes GPT-2's Conv1D weights transposed when it loads them through bitsandbytes: the scratch
    NF4 layers hold the same bytes and scales (without double quantization), and with the same LoRA weights the
    scratch QLoRA computes what peft's LoRA on the bitsandbytes model computes.
    The model is 64 wide, so that every 4-bit row is a whole number of 64-value blocks: bitsandbytes dequantizes
    other widths wrongly on AVX-512 CPUs (the next test), and this test compares against its dequantization."""
    from peftlab.production import check_bitsandbytes_cpu_dequantization

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=100, n_positions=64)).eval()
    targets = ("c_attn", "c_proj", "c_fc")
    hub = _gpt2_4bit_through_transformers(base, tmp_path / "gpt2")
    assert check_bitsandbytes_cpu_dequantization(hub) == 4  # weights (192, 64), (64, 64), (256, 64), (64, 256)
    ours = copy.deepcopy(base)
    qlora.add_qlora(ours, lora.LoraConfig(r=2, target_modules=targets), double_quant=False)
    randomize(ours, ".lora_B.", scale=0.1)
    theirs = peft.get_peft_model(hub, peft.LoraConfig(r=2, lora_alpha=16, target_modules=list(targets),
                                                      task_type="CAUSAL_LM"))
    for path, layer in lora.lora_layers(ours):
        peft_layer = theirs.base_model.model.get_submodule(path)
        packed = peft_layer.base_layer.weight
        assert torch.equal(packed.data.view(-1), layer.base_layer.nf4_packed.view(-1)), path
        assert torch.equal(packed.quant_state.absmax, layer.base_layer.nf4_absmax), path
        with torch.no_grad():
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A.weight)
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B.weight)
    assert len(lora.lora_layers(ours)) == 8  # c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj in each of 2 layers
    assert_same(output(ours, IDS), output(theirs, IDS))
    theirs.save_pretrained(tmp_path / "from_peft")  # peft saves fan_in_fan_out=False for the 4-bit layers
    back = copy.deepcopy(base)
    qlora.quantize_model(back, targets, double_quant=False)
    lora.load_lora(back, tmp_path / "from_peft")
    assert_same(output(back, IDS), output(ours, IDS))


def _has_avx512f() -> bool:
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "") \
        if Path("/proc/cpuinfo").exists() else ""
    return " avx512f " in f" {flags.split(':')[-1]} "


def test_bitsandbytes_cpu_dequantization_of_rows_narrower_than_a_block(tmp_path):
    """Documents bitsandbytes 0.50's native CPU dequantization where it differs by CPU, and peftlab's guard.

    Its AVX-512 branch (csrc/cpu_ops.cpp, dequantizeBlockwise4bitCpu; taken when the CPU reports AVX-512F) looks a
    block's scale up as if each row began a new 64-value block, so a 96x32 weight comes back wrong there; on other
    CPUs the scalar branch is right. The reference is bitsandbytes' own pure-PyTorch dequantization. The production
    loaders refuse such a model with one line naming the layer, wherever the native result is wrong."""
    import bitsandbytes.functional as bnb_f
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

    from peftlab.production import check_bitsandbytes_cpu_dequantization

    weight = torch.randn(96, 32, generator=torch.Generator().manual_seed(0))
    packed, state = bnb_f.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    native = bnb_f.dequantize_4bit(packed, state)
    reference = _dequantize_4bit_compute(packed.view(-1), state.absmax, state.code, 64, (96, 32), torch.float32)
    native_is_wrong = bool((native - reference).abs().max() > 0.1)  # right: equal; wrong: off by ~1 (weights ~N(0,1))
    assert native_is_wrong == _has_avx512f(), "bitsandbytes' CPU dequantization changed: revisit the guard and docs/testing.md"

    torch.manual_seed(0)
    hub = _gpt2_4bit_through_transformers(
        GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100, n_positions=64)), tmp_path / "g")
    if native_is_wrong:
        with pytest.raises(ValueError, match=r"dequantizes transformer\.h\.0\.attn\.c_attn \(a 96x32 4-bit weight\) "
                                             r"wrongly on this CPU.*multiples of 64"):
            check_bitsandbytes_cpu_dequantization(hub)
    else:
        assert check_bitsandbytes_cpu_dequantization(hub) == 4  # (96, 32), (32, 32), (128, 32), (32, 128)


# --- clear errors where a method cannot apply ---------------------------------------------------------------------

def _gpt_neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    return GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, vocab_size=100)).eval()


def test_ia3_without_defaults_for_the_architecture_says_what_to_pass():
    with pytest.raises(ValueError, match=r"IA3 has no default target modules for model type 'gpt_neox' "
                                         r"\(GPTNeoXForCausalLM\).*IA3Config\(target_modules="):
        ia3.add_ia3(_gpt_neox())
    model = _gpt_neox()  # named explicitly, it applies
    ia3.add_ia3(model, ia3.IA3Config(target_modules=("query_key_value", "dense_4h_to_h"),
                                     feedforward_modules=("dense_4h_to_h",)))


def test_bottleneck_adapters_on_an_unknown_architecture_name_it_and_the_reason():
    with pytest.raises(InjectionError, match=r"GPTNeoXForCausalLM \(model type 'gpt_neox'\) is none of these.*residual"
                                             r".*AdapterHub"):
        bn.add_adapter(_gpt_neox(), "a")


def test_prompt_tuning_without_an_input_embedding_says_so():
    class NoEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

    with pytest.raises(InjectionError, match="NoEmbedding has no get_input_embeddings"):
        prompt.add_prompt(NoEmbedding(), prompt.PromptTuningConfig(num_virtual_tokens=2, init="random"))


def test_qlora_names_a_layer_it_cannot_quantize():
    with pytest.raises(InjectionError, match=r"wte is a Embedding; only plain nn.Linear layers \(and GPT-2's Conv1D\)"):
        qlora.quantize_model(base_model("gpt2"), ("wte",))
