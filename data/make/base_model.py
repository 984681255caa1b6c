"""Pretrain the course's base model: a tiny Llama on the generated story corpus.

    python data/make/base_model.py --preset base --tokenizer data/base --out data/base   # the shipped model (GPU: minutes)
    python data/make/base_model.py --preset tiny --out /tmp/tiny    # seconds on a CPU; the tests run this

This builds the course's asset; no chapter imports it. Steps: generate the corpus (``corpus.py``
beside this file), train a byte-level BPE tokenizer on
it (unless ``--tokenizer DIR`` reuses one), pack the token stream into fixed-length
blocks, train ``transformers.LlamaForCausalLM`` with AdamW and a cosine schedule, then
measure validation loss against a unigram baseline and write the model, tokenizer,
``train_log.json`` and a model card (``README.md``) whose every figure comes from the run.

The architecture is Llama's own class, so module names are exactly those of Llama-3,
Mistral and Qwen (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``,
``up_proj``, ``down_proj``) and every PEFT library recognises them.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from corpus import VALIDATION_SEED_OFFSET, generate_documents  # data/make/corpus.py, beside this file

SPECIAL_TOKENS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}


@dataclass
class PretrainConfig:
    n_documents: int = 400_000      # stories in the training corpus (about 70 tokens each)
    n_val_documents: int = 4_000    # held-out stories, generated from another seed
    vocab_size: int = 1024          # BPE budget; the small story world needs only about 800 of it
    hidden_size: int = 128
    intermediate_size: int = 384    # 3x hidden, as Llama's SwiGLU MLP roughly is
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2    # grouped-query attention, as in Llama-3: k_proj/v_proj are narrower
    max_position_embeddings: int = 256
    seq_len: int = 128
    batch_size: int = 128
    steps: int = 8000
    lr: float = 3e-3                # tiny models tolerate (and need) a high rate
    warmup_steps: int = 200
    weight_decay: float = 0.1
    seed: int = 0


PRESETS = {
    "base": PretrainConfig(),
    "tiny": PretrainConfig(n_documents=3000, n_val_documents=200, vocab_size=512, hidden_size=32,
                           intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=1, seq_len=64, batch_size=16, steps=150, warmup_steps=10),
}


def llama_config_dict(cfg: PretrainConfig, tokenizer) -> dict:
    """A plain Llama config.json, written by hand so it reads the same in any transformers version."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.hidden_size // cfg.num_attention_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "initializer_range": 0.02,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": tokenizer.token_to_id(SPECIAL_TOKENS["bos_token"]),
        "eos_token_id": tokenizer.token_to_id(SPECIAL_TOKENS["eos_token"]),
        "pad_token_id": tokenizer.token_to_id(SPECIAL_TOKENS["pad_token"]),
        "torch_dtype": "float32",
    }


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (as GPT-2 and Llama-3), with every digit its own token (as Llama)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def save_tokenizer(tok, out_dir: Path, max_length: int) -> None:
    """tokenizer.json plus a hand-written tokenizer_config.json that AutoTokenizer reads."""
    tok.save(str(out_dir / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
              "clean_up_tokenization_spaces": False, "padding_side": "right", **SPECIAL_TOKENS}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS, indent=2) + "\n")


def pack(tok, docs: list[str], seq_len: int) -> torch.Tensor:
    """Concatenate ``<bos> story <eos>`` for every story and cut into blocks of seq_len tokens."""
    eos = tok.token_to_id(SPECIAL_TOKENS["eos_token"])
    stream: list[int] = []
    for enc in tok.encode_batch(docs):
        stream.extend(enc.ids)
        stream.append(eos)
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def unigram_cross_entropy(train: torch.Tensor, val: torch.Tensor, vocab_size: int) -> float:
    """Loss (nats/token) of the best model that ignores context: train-set token frequencies."""
    counts = torch.bincount(train.flatten(), minlength=vocab_size).double() + 1.0  # add-one smoothing
    logp = (counts / counts.sum()).log()
    return float(-logp[val[:, 1:].flatten()].mean())  # position 0 is never predicted by the model


@torch.no_grad()
def validation_loss(model, val: torch.Tensor, batch_size: int, device) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(val), batch_size):
        x = val[i : i + batch_size].to(device)
        loss = model(input_ids=x, labels=x).loss
        total += float(loss) * len(x)
        count += len(x)
    model.train()
    return total / count


def pretrain(cfg: PretrainConfig, out_dir: Path, tokenizer_dir: Path | None = None, device: str | None = None,
             log_every: int = 500) -> dict:
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    t_start = time.time()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    docs = generate_documents(cfg.n_documents, seed=cfg.seed)
    val_docs = generate_documents(cfg.n_val_documents, seed=cfg.seed + VALIDATION_SEED_OFFSET)
    if tokenizer_dir is not None:
        tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    else:
        tok = train_tokenizer(docs[:50_000], cfg.vocab_size)
    save_tokenizer(tok, out_dir, cfg.max_position_embeddings)
    train_blocks = pack(tok, docs, cfg.seq_len)
    val_blocks = pack(tok, val_docs, cfg.seq_len)

    config_dict = llama_config_dict(cfg, tok)
    model = LlamaForCausalLM(LlamaConfig(**config_dict)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    gen = torch.Generator().manual_seed(cfg.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    history = []
    t_train = time.time()
    model.train()
    for step in range(cfg.steps):
        idx = torch.randint(len(train_blocks), (cfg.batch_size,), generator=gen)
        x = train_blocks[idx].to(device, non_blocking=True)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with autocast:
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % log_every == 0 or step == cfg.steps - 1:
            history.append({"step": step, "train_loss": round(loss.item(), 4)})
            print(f"step {step:6d}  loss {loss.item():.4f}  {time.time() - t_train:7.1f}s", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.time() - t_train

    val_loss = validation_loss(model, val_blocks, 256, device)
    unigram = unigram_cross_entropy(train_blocks, val_blocks, tok.get_vocab_size())
    model = model.to("cpu").float()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")

    log = {
        "config": asdict(cfg),
        "parameters": n_params,
        "vocab_size": tok.get_vocab_size(),
        "train_tokens_in_corpus": train_blocks.numel(),
        "val_tokens": val_blocks.numel(),
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len,
        "epochs": round(cfg.steps * cfg.batch_size / len(train_blocks), 2),
        "val_loss": round(val_loss, 4),
        "val_perplexity": round(math.exp(val_loss), 2),
        "unigram_val_loss": round(unigram, 4),
        "unigram_val_perplexity": round(math.exp(unigram), 2),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "hardware": (torch.cuda.get_device_name(0) if device.type == "cuda"
                     else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"),
        "torch": torch.__version__,
        "precision": "bf16 autocast, fp32 master weights" if device.type == "cuda" else "fp32",
        "history": history,
    }
    (out_dir / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
    (out_dir / "README.md").write_text(model_card(log))
    return log


def model_card(log: dict) -> str:
    c = log["config"]
    return f"""# peftlab-tiny-llama: the course's base model

A {log['parameters']:,}-parameter decoder-only model with the Llama architecture
(`transformers.LlamaForCausalLM`), pretrained from scratch by
`python data/make/base_model.py --preset base --tokenizer data/base --out data/base`
on a corpus that the same command generates (without `--tokenizer` it also retrains
the tokenizer, from the first 50,000 stories). It ships with the repo so that the course runs offline. Every figure below was written by that run (`train_log.json`).

| | |
|---|---|
| parameters | {log['parameters']:,} |
| layers / hidden / MLP / heads / kv heads | {c['num_hidden_layers']} / {c['hidden_size']} / {c['intermediate_size']} / {c['num_attention_heads']} / {c['num_key_value_heads']} |
| vocabulary | {log['vocab_size']} byte-level BPE tokens, digits split one per token |
| context | {c['max_position_embeddings']} positions (trained on blocks of {c['seq_len']}) |
| corpus | {c['n_documents']:,} generated stories (`data/make/corpus.py`, seed {c['seed']}), {log['train_tokens_in_corpus']:,} tokens |
| tokens seen | {log['tokens_seen']:,} ({c['steps']:,} steps x batch {c['batch_size']} x {c['seq_len']} tokens, {log['epochs']} epochs) |
| optimiser | AdamW (betas 0.9/0.95, weight decay {c['weight_decay']}), peak lr {c['lr']}, {c['warmup_steps']} warmup steps, cosine to 10% |
| validation loss | **{log['val_loss']}** nats/token (perplexity {log['val_perplexity']}) on {log['val_tokens']:,} held-out tokens |
| unigram baseline | {log['unigram_val_loss']} nats/token (perplexity {log['unigram_val_perplexity']}): token frequencies, no context |
| hardware | {log['hardware']}, {log['precision']}, torch {log['torch']} |
| time | {log['train_seconds']} s training, {log['total_seconds']} s in all (corpus, tokenizer, training, evaluation) |

## What it knows, and what it does not
The corpus is short stories about a small world: names, animals, things, colours,
places, food; counting ("had 12 ... found 7 more ... now had 19"); and reviews whose
adjectives come with a feeling ("the sentiment was positive"). It has never seen the
formats of the course's tasks (`review: ... sentiment:`, `41+17=`, `reverse: ... ->`),
so it scores close to zero on them until a PEFT method teaches it.

It is a teaching model: far too small to be useful for anything else, and it knows
nothing outside its generated world.
"""  # noqa: E501 -- a markdown table, a row per line


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="base")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, default=None, help="reuse the tokenizer in this folder")
    p.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    cfg = PRESETS[args.preset]
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    log = pretrain(cfg, args.out, args.tokenizer, args.device)
    print(json.dumps({k: v for k, v in log.items() if k not in ("history", "config")}, indent=2))


if __name__ == "__main__":
    main()
