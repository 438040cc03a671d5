"""Work handed to one background thread, in order, while the caller goes on (the network)."""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Callable
from typing import Any


class InOrder:
    """Run calls one after another on one thread, in the order submitted, with at most ``depth``
    waiting (each holds its arguments' memory). :meth:`close` waits for all of them and raises the
    first error. With ``threaded=False`` every call runs at once in the caller's thread: the
    serial path, for comparisons and tests."""

    def __init__(self, threaded: bool = True, depth: int = 2, name: str = "rawdev-finish"):
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name) if threaded else None
        self.depth = depth
        self.pending: collections.deque[concurrent.futures.Future] = collections.deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.pool is None:
            fn(*args)
            return
        while self.pending and (len(self.pending) >= self.depth or self.pending[0].done()):
            self.pending.popleft().result()  # an error in the background surfaces here, early
        self.pending.append(self.pool.submit(fn, *args))

    def close(self) -> None:
        """Wait for everything submitted; the first error is raised after all have ended."""
        if self.pool is None:
            return
        error: BaseException | None = None
        while self.pending:
            try:
                self.pending.popleft().result()
            except BaseException as exc:  # noqa: BLE001 - every call is waited for before raising
                error = error or exc
        self.pool.shutdown(wait=True)
        if error is not None:
            raise error

    def __enter__(self) -> InOrder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.close()
        else:  # the caller failed: still wait (the image is shared), but its error wins
            try:
                self.close()
            except Exception:  # noqa: BLE001
                pass
