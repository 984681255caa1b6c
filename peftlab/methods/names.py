"""The course's name for each method, written once.

These strings are the keys of the experiments' registry (:mod:`peftlab.study.experiments`), of the memory
calculator (:mod:`peftlab.memory`) and of the stored studies in ``data/results/``; a chapter that reads a
study by one of them reads the same method the registry trained.
"""

FULL_FINE_TUNING = "full fine-tuning"
LORA = "LoRA"                                  # on every linear layer, the course's default
LORA_QV = "LoRA q,v"                           # on the query and value projections only, the LoRA paper's choice
QLORA = "QLoRA"
IA3 = "IA3"
ADAPTER_HOULSBY = "adapter (Houlsby)"          # two bottleneck adapters a layer
ADAPTER_PFEIFFER = "adapter (Pfeiffer)"        # one, after the MLP
PROMPT_TUNING = "prompt tuning"
# peft's own LoRA and its variants, for what the scratch code does not build
LORA_PEFT = "LoRA (peft)"
DORA_PEFT = "DoRA (peft)"
RSLORA_PEFT = "rsLoRA (peft)"
# hybrids (peftlab.methods.hybrid)
PROMPT_AND_LORA = "prompt + LoRA"
ADAPTER_AND_LORA = "adapter + LoRA"
QLORA_BASE_AND_ADAPTER = "QLoRA base + adapter"
