"""Loading a base model: the bundled one, offline, by default; any causal LM by id or path."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from peftlab.course.data import data_path


def bundled_model() -> Path:
    """The course's base model folder, looked up when asked (so ``PEFTLAB_DATA`` set after import moves it too)."""
    return data_path("base")


def __getattr__(name: str):
    if name == "BUNDLED_MODEL":  # the chapters' name for it, computed when read, like the tasks' paths
        return bundled_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def course_device() -> torch.device:
    """The device the course computes on: the GPU when PyTorch sees one, else the CPU.

    ``PEFTLAB_DEVICE`` chooses another (``cpu`` on a GPU machine, to get the CPU's results; ``cuda:1``)."""
    chosen = os.environ.get("PEFTLAB_DEVICE")
    if chosen:
        device = torch.device(chosen)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"PEFTLAB_DEVICE={chosen} asks for a GPU, but PyTorch sees none here; "
                               "unset it (or set it to cpu)")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def course_seed() -> int:
    """The seed every chapter trains with: 0, unless ``PEFTLAB_SEED`` names another.

    A finding that one seed shows may be luck. ``benchmarks/chapter_seeds.py`` runs every chapter again with
    ``PEFTLAB_SEED`` = 1, 2, 3, 4 and stores what each of its asserts measured (data/results/chapter_seeds.json), so
    that an assert on a training result is kept only where it holds for every seed with room to spare."""
    chosen = os.environ.get("PEFTLAB_SEED", "0")
    if not chosen.isdigit():
        raise ValueError(f"PEFTLAB_SEED={chosen!r}: give a whole number such as 0 or 3 (or unset it for 0)")
    return int(chosen)


def load_base(name_or_path: str | Path | None = None, dtype: torch.dtype = torch.float32, seed: int | None = None,
              device: str | torch.device | None = None, **kwargs):
    """``(model, tokenizer)`` for a causal language model, in eval mode on ``device`` (None: :func:`course_device`).

    With no argument: the course's bundled base model from ``data/base``, read from disk
    with no network access. Otherwise any Hugging Face model id (downloaded when online)
    or local folder of a causal LM; extra keyword arguments go to ``from_pretrained``.
    Every call returns a fresh copy, so re-running a notebook cell starts clean.
    A model loaded with a ``quantization_config`` or a ``device_map`` stays where transformers put it
    (bitsandbytes places a 4-bit model on the GPU when there is one, and such a model cannot be moved).
    """
    path = bundled_model() if name_or_path is None else name_or_path
    if name_or_path is None and not Path(path).exists():
        raise FileNotFoundError(f"the bundled base model is missing from {path}; a fresh clone has it "
                                "(git checkout data/base), or rebuild it: python data/make/base_model.py --help")
    local = model_source(path)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model, tokenizer = load_causal_lm(path, local, dtype=dtype, **kwargs)
    except OSError as error:  # no such hub id, no network, a folder without weights: transformers' pages of text
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OSError(f"{path} could not be loaded: {first}") from None
    if "quantization_config" not in kwargs and "device_map" not in kwargs:
        model.to(course_device() if device is None else torch.device(device))
    elif device is not None:
        raise ValueError("device= moves a plain model; with quantization_config or device_map, transformers places "
                         "the model: pass device_map={'': device} instead of device=")
    model.eval()
    return model, tokenizer


def model_source(name_or_path: str | Path) -> bool:
    """Whether a model is a local folder (True) or a hub id (False); anything that can be neither, or a hub id while
    the hub is switched off, is a FileNotFoundError that says so. (``load_base`` and the production recipe's
    ``load_model`` both ask here.)"""
    text = str(name_or_path)
    local = Path(name_or_path).exists()
    if not local and (text.startswith(("/", "./", "../", "~")) or text.count("/") > 1 or "\\" in text):
        raise FileNotFoundError(f"no such folder: {text} (a model is a local folder with config.json, or a hub id "
                                "such as 'owner/name')")
    if local and not (Path(name_or_path).is_dir() and (Path(name_or_path) / "config.json").exists()):
        raise FileNotFoundError(f"{text} is not a model folder: it has no config.json (save a model there with "
                                "save_pretrained, or give the folder that has one)")
    if not local and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        raise FileNotFoundError(f"{text} is not a local folder, and the hub is switched off (HF_HUB_OFFLINE="
                                f"{os.environ['HF_HUB_OFFLINE']}): give the folder of a downloaded model, or go online")
    return local


def load_causal_lm(name_or_path: str | Path, local: bool, **from_pretrained):
    """``(model, tokenizer)`` from transformers' Auto classes, with a padding token (many causal LMs ship without one;
    batching needs it). Shared by ``load_base`` and the production recipe."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, local_files_only=local, **from_pretrained)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
