"""Ending a process that has finished its work without the interpreter's teardown.

Python's own exit frees every module, object and heap one by one (a cyclic collection included):
in a process that held an onnxruntime session and a batch's arrays that costs 0.15-0.4 s, after
the last output is written and before the caller (a shell, a batch's parent) can go on. What an
exit must still do is done here: wait for non-daemon threads, run the exit handlers (rawdev's
stop the decoder process), flush stdout and stderr.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_without_teardown(code: object = 0) -> NoReturn:
    """Exit with ``code`` as :func:`sys.exit` would (None: 0; a string: printed, then 1), skipping
    only the teardown. Where the exit handlers cannot be run directly (not CPython), it is the
    ordinary exit."""
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:
        sys.exit(code)
    for thread in threading.enumerate():  # what the interpreter waits for before the handlers
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    run_exit_handlers()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (rawdev models | head): nothing more to say
            pass
    os._exit(code or 0)
