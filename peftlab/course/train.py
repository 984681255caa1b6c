"""A small training loop and the exact-match evaluation used across the course.

    history = train(model, tokenizer, load_task("addition"), TrainConfig(steps=300, lr=3e-3))
    evaluate(model, tokenizer, load_task("addition", "validation"))   # {"accuracy": ..., "loss": ...}

Whatever PEFT method was applied, ``train`` optimises the parameters with
``requires_grad=True`` and nothing else. With the same seed it draws the same batches
and the same dropout masks, so two runs on the CPU give the same losses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from peftlab.core import checks
from peftlab.course.tasks import check_examples, encode_example


@dataclass
class TrainConfig:
    steps: int = 300
    lr: float = 3e-3           # a rate for LoRA on this tiny model; full fine-tuning needs a lower one
    batch_size: int = 32
    weight_decay: float = 0.0  # PEFT parameters are few and start at zero: decay only pulls them back
    warmup_steps: int = 20
    seed: int = 0
    progress: bool = True      # a tqdm.auto bar: a widget in Jupyter, a line in a terminal

    def __post_init__(self):
        checks.whole_number("steps", self.steps)
        checks.whole_number("batch_size", self.batch_size)
        checks.positive_number("lr", self.lr, " (a learning rate)")
        checks.whole_number("warmup_steps", self.warmup_steps, minimum=0)
        checks.whole_number("seed", self.seed, minimum=0)
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) \
                or not 0 <= self.weight_decay < float("inf"):
            raise ValueError(f"weight_decay must be a finite number of at least 0, got {self.weight_decay!r}")


def collate(tokenizer, examples: list[dict], device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on prompt and padding).

    ``device``: where the tensors go (None: the CPU); pass the model's, e.g. ``course_device()``."""
    batch = pad_batch([encode_example(tokenizer, ex) for ex in examples], tokenizer.pad_token_id)
    return batch if device is None else on_device(batch, torch.device(device))


def pad_batch(encoded: list[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    """``collate`` for examples already tokenized by ``encode_example``."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(encoded):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(labs)] = torch.tensor(labs)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def batches(examples: list[dict], batch_size: int, steps: int, seed: int):
    """``steps`` batches drawn by epochs of a seeded shuffle."""
    order: list[int] = []
    r = random.Random(seed)
    for _ in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(examples)))
            r.shuffle(fresh)
            order += fresh
        yield [examples[i] for i in order[:batch_size]]
        order = order[batch_size:]


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: apply a PEFT method (or unfreeze) before training")
    return params


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def on_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch moved to the model's device (a no-op on the CPU)."""
    return {k: v.to(device) for k, v in batch.items()}


def train(model, tokenizer, examples: list[dict], config: TrainConfig | None = None, forward=None,
          callback=None) -> list[float]:
    """Train the parameters that require grad with AdamW; return the loss at every step.

    ``config``: a TrainConfig (None: its defaults). ``forward(model, batch)`` may replace the
    plain ``model(**batch).loss`` (prompt tuning uses it). ``callback(step, model)``, if given,
    runs after every step; when it returns True, training stops there (early stopping:
    :func:`peftlab.study.experiments.run_to_convergence` evaluates in it).
    """
    config = config if config is not None else TrainConfig()
    if not examples:
        raise ValueError("train got no examples: give a list of {'prompt': ..., 'answer': ...} dicts")
    check_examples(examples, "train")
    params = trainable_parameters(model)
    torch.manual_seed(config.seed)
    # foreach: one call updates every tensor (the CPU default loops over them in Python); the same update
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)))
    forward = forward or (lambda m, batch: m(**batch).loss)
    tokenized: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def encode(example):  # each example is tokenized once, not at every step: on a model this small
        key = (example["prompt"], example["answer"])  # the tokenizer costs a tenth of a step
        if key not in tokenized:
            tokenized[key] = encode_example(tokenizer, example)
        return tokenized[key]

    device = model_device(model)
    model.train()
    losses = []
    bar = tqdm(batches(examples, config.batch_size, config.steps, config.seed), total=config.steps,
               disable=not config.progress, desc="training", leave=False, mininterval=0.5)
    for batch_examples in bar:
        loss = forward(model, on_device(pad_batch([encode(ex) for ex in batch_examples], tokenizer.pad_token_id), device))
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if len(losses) % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / 10:.3f}")
        if callback is not None and callback(len(losses), model):
            break
    bar.close()
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model, tokenizer, examples: list[dict], batch_size: int = 100, forward_logits=None) -> dict:
    """Exact-match accuracy and mean answer loss, from one teacher-forced pass per batch.

    An example counts as correct when the argmax at every answer position (and the
    closing end-of-text) is the right token -- exactly what greedy decoding would emit.
    """
    if not examples:
        raise ValueError("evaluate got no examples: give a list of {'prompt': ..., 'answer': ...} dicts")
    check_examples(examples, "evaluate")
    checks.whole_number("batch_size", batch_size)
    was_training = model.training
    model.eval()
    correct, loss_sum, token_count = 0, 0.0, 0
    forward_logits = forward_logits or (lambda m, batch: m(input_ids=batch["input_ids"],
                                                            attention_mask=batch["attention_mask"]).logits)
    device = model_device(model)
    for i in range(0, len(examples), batch_size):
        batch = on_device(collate(tokenizer, examples[i : i + batch_size]), device)
        logits = forward_logits(model, batch)[:, :-1].float()
        targets = batch["labels"][:, 1:]
        scored = targets != -100
        hit = (logits.argmax(-1) == targets) | ~scored
        correct += int(hit.all(dim=1).sum())
        loss_sum += float(torch.nn.functional.cross_entropy(logits[scored], targets[scored], reduction="sum"))
        token_count += int(scored.sum())
    model.train(was_training)
    return {"accuracy": correct / len(examples), "loss": loss_sum / token_count}


@torch.no_grad()
def text_losses(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """One row per text: its summed next-token loss (nats) and how many tokens were predicted (float64)."""
    was_training = model.training
    model.eval()
    rows = []
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]], device=model_device(model))
        loss = model(input_ids=ids, labels=ids).loss
        rows.append((float(loss) * (ids.shape[1] - 1), ids.shape[1] - 1))
    model.train(was_training)
    return torch.tensor(rows, dtype=torch.float64)


def language_modelling_loss(model, tokenizer, texts: list[str]) -> float:
    """Mean next-token loss (nats/token) on plain texts: how much of its pretraining a model kept."""
    rows = text_losses(model, tokenizer, texts)
    return float(rows[:, 0].sum() / rows[:, 1].sum())
