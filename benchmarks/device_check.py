"""Every scratch method on a GPU as on the CPU, whichever device the model was on when the method was added.

For each method of ``peftlab.study.experiments.METHODS`` that is built from scratch, on the bundled model:

- **cpu**: a fresh base on the CPU, the method added there (the reference);
- **added, then moved**: the same, then ``model.to(device)``;
- **moved, then added**: a fresh base moved to the device first, the method added there
  (QLoRA then quantizes on the device);

and for each: the trainable weights as initialised (equal to the CPU's: a seed gives the same start on any
device), the logits on one batch (against the CPU reference; fp32, TF32 off), one training step's
loss and gradients (finite, on the device, only on trainable parameters), and where every parameter
and buffer lives. It prints one row per method and case, and exits non-zero if any check failed.

    python benchmarks/device_check.py                 # CUDA if present, else it says so and checks nothing
    python benchmarks/device_check.py --device cpu    # the same checks, CPU against CPU (what CI can run)
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch

from peftlab import load_base, load_task
from peftlab.course.measure import describe_machine
from peftlab.course.train import collate
from peftlab.methods.names import (ADAPTER_AND_LORA, ADAPTER_HOULSBY, ADAPTER_PFEIFFER, IA3, LORA, LORA_QV, PROMPT_AND_LORA,
                                   PROMPT_TUNING, QLORA, QLORA_BASE_AND_ADAPTER)
from peftlab.study.experiments import apply_method

SCRATCH = [LORA, LORA_QV, QLORA, IA3, ADAPTER_HOULSBY, ADAPTER_PFEIFFER, PROMPT_TUNING,
           PROMPT_AND_LORA, ADAPTER_AND_LORA, QLORA_BASE_AND_ADAPTER]
TOLERANCE = 1e-4  # fp32 on both sides with TF32 off: only the order of summation differs


def apply(method: str, model, tokenizer):
    torch.manual_seed(0)
    return apply_method(method, model, tokenizer)


def places(model) -> set[str]:
    return {t.device.type for t in list(model.parameters()) + list(model.buffers())}


def check(method: str, device: torch.device, batch: dict) -> list[dict]:
    base, tokenizer = load_base(device="cpu")  # the reference: the CPU, whatever the course device is
    reference = apply(method, copy.deepcopy(base), tokenizer)
    with torch.no_grad():
        wanted = reference(**batch).logits
    cases = {"added, then moved": lambda: apply(method, copy.deepcopy(base), tokenizer).to(device),
             "moved, then added": lambda: apply(method, copy.deepcopy(base).to(device), tokenizer)}
    rows = []
    for case, build in cases.items():
        row = {"method": method, "case": case}
        try:
            model = build()
            wanted_weights = {n: p for n, p in reference.named_parameters() if p.requires_grad}
            row["max |weights - cpu|"] = max((p.detach().float().cpu() - wanted_weights[n].detach()).abs().max().item()
                                             for n, p in model.named_parameters() if p.requires_grad)
            on_device = {k: v.to(device) for k, v in batch.items()}
            with torch.no_grad():
                logits = model(**on_device).logits
            row["max |logits - cpu|"] = (logits.float().cpu() - wanted).abs().max().item()
            model.train()
            loss = model(**on_device).loss
            loss.backward()
            trainable = [p for p in model.parameters() if p.requires_grad]
            row["grads ok"] = bool(trainable) and all(p.grad is not None and torch.isfinite(p.grad).all()
                                                      for p in trainable) and \
                all(p.grad is None for p in model.parameters() if not p.requires_grad)
            row["where"] = ",".join(sorted(places(model)))
            row["ok"] = (row["max |weights - cpu|"] == 0 and row["max |logits - cpu|"] < TOLERANCE and row["grads ok"]
                         and row["where"] == device.type)
        except Exception as error:  # a method that cannot run there: the row says why
            row["error"] = f"{type(error).__name__}: {str(error)[:160]}"
            row["ok"] = False
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--methods", nargs="*", default=SCRATCH)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing checked (use --device cpu for the CPU-only version)")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    _, tokenizer = load_base(device="cpu")
    batch = collate(tokenizer, load_task("addition", "validation")[:8])
    name = describe_machine(device)["name"]
    print(f"device: {name}; torch {torch.__version__}; logits compared with the CPU within {TOLERANCE:g}")
    failed = 0
    for method in args.methods:
        for row in check(method, device, batch):
            failed += not row["ok"]
            detail = row.get("error") or (f"initial weights {'equal' if row['max |weights - cpu|'] == 0 else 'DIFFER'}, "
                                          f"max |logits - cpu| {row['max |logits - cpu|']:.1e}, "
                                          f"grads {'ok' if row['grads ok'] else 'WRONG'}, tensors on {row['where']}")
            print(f"{'ok  ' if row['ok'] else 'FAIL'} {method:22s} {row['case']:18s} {detail}")
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
