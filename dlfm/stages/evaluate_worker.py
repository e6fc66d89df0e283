"""One local evaluate worker process (``-P workers=N``): joins its parent run and computes its share of cells.

Its own module, above both ``evaluate`` (which owns ``join_parent``) and ``evaluate_cells`` (which starts
it by module name), so neither of those imports the other back.
"""

from __future__ import annotations

import os
import signal
import sys

from dlfm.errors import DlfmError
from dlfm.redact import scrub
from dlfm.signals import stop_when_parent_dies
from dlfm.stages.evaluate import join_parent
from dlfm.stages.evaluate_cells import PARENT_ENV, RANK_ENV, WORKERS_ENV
from dlfm.training.interrupt import StopRequest, graceful_stop


def worker_main() -> None:
    """``python -m dlfm.stages.evaluate_worker``: local worker ``$DLFM_WORKER_RANK`` of the parent ``$DLFM_EVALUATE_PARENT``.

    A stop (SIGTERM from worker 0, Ctrl-C to the terminal's group) ends its child run KILLED and
    exits quietly: worker 0 prints the one line.
    """
    stop_when_parent_dies(always=True)
    stop = StopRequest()
    rank = int(os.environ[RANK_ENV])
    with graceful_stop(stop):
        try:
            join_parent(os.environ[PARENT_ENV], rank, int(os.environ[WORKERS_ENV]), stop)
        except KeyboardInterrupt as error:
            sys.exit(128 + getattr(error, "signal_number", signal.SIGINT))
        except DlfmError as error:
            print(f"dlfm: error: evaluate worker {rank}: {scrub(str(error).splitlines()[0])}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    worker_main()
