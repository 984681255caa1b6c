"""The same recipes through the production libraries, so a notebook can run both with one switch.

    model = apply_lora(model, LoraConfig(r=8), backend="scratch")   # peftlab.methods.lora, from scratch
    model = apply_lora(model, LoraConfig(r=8), backend="peft")      # huggingface peft

Both take peftlab's config and give a model that ``peftlab.course.train`` trains the same way.
``peftlab.production.finetune`` is the recipe a learner runs next: transformers' ``Trainer`` + peft on
their own model and data, on one process or several (``peftlab finetune``).
This package is the only part of peftlab that imports the production libraries. The code is in
``bridges.py`` (the course's configs through peft, AdapterHub and bitsandbytes) and ``finetune.py``
(the recipe); this file only names what they offer.
"""

from __future__ import annotations

from peftlab.production.bridges import (ADAPTERHUB_BLOCKS, BACKENDS, add_adapter_adapterhub,
                                       add_adapter_and_lora_adapterhub, add_ia3_peft, add_lora_peft,
                                       add_lora_variant_peft, add_prompt_peft, apply_lora,
                                       avoid_bitsandbytes_cpu_eval_trap, check_bitsandbytes_cpu_dequantization,
                                       copy_adapter_weights, copy_hybrid_weights_to_adapterhub, copy_lora_weights,
                                       load_base_4bit, lora_weights, nf4_quantization_config, peft_prompt_weight,
                                       to_peft_lora_config)
