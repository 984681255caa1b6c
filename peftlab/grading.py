"""Checks for the classroom's graded cells: a failed check says what was expected and what came back.

    expect(layer.lora_B.weight.abs().max() == 0, "B starts at zero", f"largest |B| = {...}")
    expect_close(layer(x), base(x), "the layer computes what the base computes")

nbgrader (``classroom/``) runs each graded cell of a student's notebook; a cell that raises scores
zero and its message goes into the student's feedback. The assignments start with ``%xmode Minimal``,
so that message is all the feedback shows: ``AssertionError: <what was expected>; got <what came back>``,
not a traceback through this file.
"""

from __future__ import annotations

import torch


def expect(condition, expected: str, got) -> None:
    """Fail with "<expected>; got <got>" unless ``condition`` holds."""
    if not bool(condition):
        raise AssertionError(f"{expected}; got {got}")


def expect_close(actual, wanted, expected: str, got: str | None = None, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Fail unless two tensors have the same shape and agree to float tolerance; the message gives
    ``expected`` and what came back (``got``, by default the shapes or the largest difference)."""
    actual, wanted = torch.as_tensor(actual), torch.as_tensor(wanted)
    if actual.shape != wanted.shape:
        raise AssertionError(f"{expected}; got a result of shape {tuple(actual.shape)} where "
                             f"{tuple(wanted.shape)} was expected")
    if not torch.allclose(actual.double(), wanted.double(), atol=atol, rtol=rtol):
        largest = (actual.double() - wanted.double()).abs().max().item()
        raise AssertionError(f"{expected}; got {got or f'a largest difference of {largest:.3g}'}")
