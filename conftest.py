"""Repository-wide pytest settings.

nbval waits only 5 seconds for a notebook kernel's output messages once a cell has finished.
On a busy 2-core machine, after a cell that trained a model with a progress bar, the kernel
can take longer than that to flush its messages, and nbval then fails a cell that ran fine.
Give it a minute; the cell-execution timeout (--nbval-cell-timeout) is unchanged.
"""

try:
    from nbval.plugin import IPyNbCell
except ImportError:  # nbval not installed: nothing to adjust
    IPyNbCell = None

if IPyNbCell is not None:
    _original_init = IPyNbCell.__init__

    def _init_with_longer_output_timeout(self, *args, **kwargs):
        _original_init(self, *args, **kwargs)
        self.output_timeout = 60

    IPyNbCell.__init__ = _init_with_longer_output_timeout
