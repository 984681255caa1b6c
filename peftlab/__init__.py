"""peftlab: parameter-efficient fine-tuning, built from scratch beside the production libraries.

    from peftlab import load_base, load_task, LoraConfig, add_lora, train, evaluate

The package in layers, each built only on the ones listed before it:

- ``peftlab.core``        shared machinery: find, wrap, switch off and freeze target modules; save and load
- ``peftlab.methods``     the PEFT methods from scratch, one file each (LoRA, adapters, prompt tuning, IA3, NF4, QLoRA, hybrids)
- ``peftlab.course``      the course's plumbing: its data, base model, tasks, training loop and timing
- ``peftlab.production``  the same recipes through peft, AdapterHub and bitsandbytes (the only importer of those),
                          and the training recipe on transformers' Trainer that scales out (``finetune``)
- ``peftlab.memory``      training memory counted from a model's shape (the calculator of chapter 04)
- ``peftlab.grading``     the checks of the classroom's graded cells (nbgrader itself is the ``classroom`` extra)
- ``peftlab.study``       experiments in one call and the stored studies read back (``experiments``, ``results``)
- ``peftlab.explorers``   the interactive explorers: what they compute, and the only module that draws
- ``peftlab.cli``         the ``peftlab`` command line, over all of it

The course's data (base model, tasks, held-out stories, stored GPU measurements) is the
repository's ``data/`` folder, found by :mod:`peftlab.course.data`; the scripts that build it
live beside it in ``data/make/``, outside the package.
"""

import logging

from peftlab.core.inject import ALL_LINEAR, InjectionError, count_parameters
from peftlab.course.model import course_device, course_seed, load_base
from peftlab.course.tasks import TASK_NAMES, load_task
from peftlab.course.train import TrainConfig, evaluate, train
from peftlab.methods.lora import (LoraConfig, add_lora, disable_lora, load_lora, merge_and_unload, merge_lora,
                                  remove_lora, save_lora, unmerge_lora)

__all__ = ["ALL_LINEAR", "InjectionError", "LoraConfig", "TASK_NAMES", "TrainConfig", "add_lora", "count_parameters",
           "course_device", "course_seed", "disable_lora", "evaluate", "load_base", "load_lora", "load_task",
           "merge_and_unload", "merge_lora", "remove_lora", "save_lora", "train", "unmerge_lora"]

# bitsandbytes' CPU backend logs a warning when the optional `kernels` package (which would
# fetch a kernel from a hub at run time) is absent; its own fallback kernels are used instead.
# (None of the imports above loads bitsandbytes; only peftlab.production does.)
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
