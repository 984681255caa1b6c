"""The grader's side of the classroom: nbgrader's executor, made to survive a kernel that dies.

nbgrader runs each submitted notebook in a kernel of its own. A cell that raises, or that runs past
the time limit (``Execute.timeout``; it is interrupted), fails its check and grading goes on. But a
kernel that *dies* -- the student's code calls ``os._exit``, segfaults, or is killed for using too
much memory -- makes nbgrader give up on the whole submission: no score for any cell, and
``nbgrader autograde`` ends in an error. ``ExecuteSurvivingCrashes`` (set in
``classroom/nbgrader_config.py``) turns a death into a failed cell instead:

1. the cell that was running gets an error output that says what happened, so its check scores
   zero and the feedback explains why;
2. a fresh kernel is started, and the cells before the fatal one are run again in it (their
   outputs are kept as they were), so the notebook's later cells see the same state;
3. grading goes on with the next cell.
"""

from __future__ import annotations

import copy

from nbclient.exceptions import DeadKernelError
from nbclient.util import ensure_async, run_sync
from nbformat import NotebookNode
from nbformat.v4 import new_output
from nbgrader.preprocessors import Execute

KERNEL_DIED = "KernelDied"
MESSAGE = ("the kernel stopped while this cell ran (the process exited or crashed: os._exit, a fault in compiled "
           "code, or more memory than the grader allows); this check scores zero and grading went on in a new kernel")


class ExecuteSurvivingCrashes(Execute):
    """nbgrader's ``Execute``, except that a kernel that dies fails only the cell it died in."""

    async def async_execute_cell(self, cell: NotebookNode, cell_index: int, execution_count: int | None = None,
                                 store_history: bool = True) -> NotebookNode:
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        except DeadKernelError:
            self.log.warning("The kernel died in cell %d; marking the cell failed and going on in a new kernel",
                             cell_index)
            cell.outputs.append(new_output("error", ename=KERNEL_DIED, evalue=MESSAGE,
                                           traceback=[f"{KERNEL_DIED}: {MESSAGE}"]))
            await self._restart_with_the_cells_before(cell_index)
            return cell

    execute_cell = run_sync(async_execute_cell)  # nbclient binds the synchronous name to its own coroutine: rebind it

    async def _restart_with_the_cells_before(self, cell_index: int) -> None:
        await ensure_async(self.km.restart_kernel(now=True))
        await ensure_async(self.kc.wait_for_ready(timeout=self.startup_timeout))
        for index, earlier in enumerate(self.nb.cells[:cell_index]):
            died_here = any(o.get("ename") == KERNEL_DIED for o in earlier.get("outputs", []))
            if earlier.cell_type == "code" and not died_here:
                # a copy: the replay rebuilds the kernel's state; the stored outputs stay those of the first run
                await super().async_execute_cell(copy.deepcopy(earlier), index, store_history=False)
