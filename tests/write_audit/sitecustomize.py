"""Records which process writes which file, for tests/test_finetune.py ("only rank 0 writes").

Put this folder on PYTHONPATH and set PEFTLAB_WRITE_AUDIT=<folder>: every Python process started then
(the launcher and each training process) appends to <folder>/writes-<pid>.txt one line when it starts
("start <RANK>") and one for every file it opens for writing outside that folder ("write <RANK> <path>"),
through Python's audit hook on ``open``. Three writers bypass that hook (safetensors and tokenizers write
from Rust, torch.save from C++), so ``safetensors.torch.save_file``, ``torch.save`` and the fast tokenizer's
``_save_pretrained`` are wrapped too. A writer missed here shows as a saved file no rank wrote, which fails the test.
"""

import os
import sys

AUDIT = os.environ.get("PEFTLAB_WRITE_AUDIT")

if AUDIT:
    _record_path = os.path.join(AUDIT, f"writes-{os.getpid()}.txt")
    def _rank():
        return os.environ.get("RANK", "-")  # torchrun sets RANK in each training process; the launcher has none
    _real_open = open

    def _record(line: str) -> None:
        with _real_open(_record_path, "a") as out:
            out.write(line + "\n")

    def _hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path, mode = os.fsdecode(args[0]), args[1]
            writing = isinstance(mode, str) and any(c in mode for c in "wax+")
            if isinstance(mode, str) is False and len(args) > 2 and isinstance(args[2], int):  # os.open(path, flags)
                writing = bool(args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and not os.path.abspath(path).startswith(os.path.abspath(AUDIT)):
                _record(f"write {_rank()} {os.path.abspath(path)}")

    _record(f"start {_rank()}")
    sys.addaudithook(_hook)

    import safetensors.torch
    import torch
    from transformers import PreTrainedTokenizerFast

    def _recording(save, path_of):
        def recorded(*args, **kwargs):
            result = save(*args, **kwargs)
            for path in path_of(args, kwargs, result):
                if isinstance(path, (str, os.PathLike)):
                    _record(f"write {_rank()} {os.path.abspath(os.fspath(path))}")
            return result
        return recorded

    safetensors.torch.save_file = _recording(safetensors.torch.save_file,
                                             lambda args, kwargs, _: [args[1] if len(args) > 1 else kwargs["filename"]])
    torch.save = _recording(torch.save, lambda args, kwargs, _: [args[1] if len(args) > 1 else kwargs["f"]])
    PreTrainedTokenizerFast._save_pretrained = _recording(PreTrainedTokenizerFast._save_pretrained,
                                                          lambda args, kwargs, names: names)
