"""The PEFT methods, each from scratch in one file that opens with its paper: :mod:`~peftlab.methods.lora`,
:mod:`~peftlab.methods.bottleneck` (adapters), :mod:`~peftlab.methods.prompt` (prompt tuning),
:mod:`~peftlab.methods.ia3`, :mod:`~peftlab.methods.nf4` (4-bit NormalFloat), :mod:`~peftlab.methods.qlora`
and :mod:`~peftlab.methods.hybrid`. They import torch and :mod:`peftlab.core`, never peft, AdapterHub
or bitsandbytes."""
