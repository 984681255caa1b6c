"""Saving and loading a method's tensors: safetensors plus a JSON config, never pickle.

Every method saves the same way -- ``<config name>.json`` and ``<weights name>.safetensors``
in one folder -- and loads through ``check_tensors``, which compares every tensor with
what the model expects *before* anything is changed, and names the first one that does
not fit. For LoRA and IA3 the files are peft's own (``adapter_config.json``,
``adapter_model.safetensors``, keys ``base_model.model.<module path>.<name>``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PEFT_PREFIX = "base_model.model."

def save_folder(out_dir: str | Path, config: dict, tensors: dict[str, torch.Tensor],
                config_name: str = "adapter_config.json", weights_name: str = "adapter_model.safetensors") -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / config_name).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(out_dir / weights_name),
              metadata={"format": "pt"})
    return out_dir


def load_folder(in_dir: str | Path, config_name: str = "adapter_config.json",
                weights_name: str = "adapter_model.safetensors") -> tuple[dict, dict[str, torch.Tensor]]:
    in_dir = Path(in_dir)
    if in_dir.name.endswith(".peftlab-partial"):  # peftlab finetune writes here until the run has finished
        raise ValueError(f"{in_dir} is an unfinished peftlab finetune run (stopped, or still running): its files may be "
                         "incomplete; load the finished run's folder, or train again")
    for p in (in_dir / config_name, in_dir / weights_name):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: a saved method folder holds {config_name} and {weights_name}")
    try:
        config = json.loads((in_dir / config_name).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{in_dir / config_name} is not valid JSON ({error}); save the adapter again") from None
    try:
        tensors = load_file(str(in_dir / weights_name))
    except Exception as error:  # safetensors raises its own error type for a truncated or foreign file
        raise ValueError(f"{in_dir / weights_name} cannot be read as safetensors ({str(error).splitlines()[0]}); "
                         "the file is damaged or incomplete: save the adapter again") from None
    return config, tensors


def check_tensors(expected: dict[str, tuple[int, ...]], tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raise a clear error unless ``tensors`` has exactly the expected keys and shapes."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source} does not fit this model: "
                         f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != tuple(shape):
            raise ValueError(f"tensor {key} in {source} has shape {tuple(tensors[key].shape)} but this base model "
                             f"needs {tuple(shape)}: it was trained on a base model of another shape")
