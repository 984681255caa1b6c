"""peftlab: parameter-efficient fine-tuning, built from scratch beside the production libraries.

    from peftlab import load_base, load_task, LoraConfig, add_lora, train, evaluate

One file per method (``peftlab.lora`` ...), one shared mechanism for finding and wrapping
target modules (``peftlab.inject``), the production recipes beside them
(``peftlab.production``), a bundled pretrained base model (``data/base``) and tasks
(``data/tasks``), and a small training loop (``peftlab.train``).
"""

import logging

# bitsandbytes' CPU backend logs a warning when the optional `kernels` package (which would
# fetch a kernel from a hub at run time) is absent; its own fallback kernels are used instead.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from peftlab.inject import ALL_LINEAR, InjectionError, count_parameters
from peftlab.lora import (LoraConfig, add_lora, disable_lora, load_lora, merge_and_unload, merge_lora, remove_lora,
                          save_lora, unmerge_lora)
from peftlab.model import load_base
from peftlab.tasks import TASK_NAMES, load_task
from peftlab.train import TrainConfig, evaluate, train


__all__ = ["ALL_LINEAR", "InjectionError", "LoraConfig", "TASK_NAMES", "TrainConfig", "add_lora", "count_parameters",
           "disable_lora", "evaluate", "load_base", "load_lora", "load_task", "merge_and_unload", "merge_lora",
           "remove_lora", "save_lora", "train", "unmerge_lora"]
