"""Bounded reads of a stream, for the tests: nothing here waits without a deadline."""

from __future__ import annotations

import threading
from typing import Callable, List, Type, TypeVar

from rpi_streamer import Stream

T = TypeVar("T")


def collect(stream: Stream, kind: Type[T], count: int, timeout: float = 20.0,
            each: Callable[[int], None] = lambda i: None) -> List[T]:
    """The first ``count`` messages of ``kind``; fewer if ``timeout`` s pass first (the
    stream is then closed, which ends its iteration). ``each(i)`` runs after the i-th."""
    got: List[T] = []
    watchdog = threading.Timer(timeout, stream.close)
    watchdog.daemon = True
    watchdog.start()
    try:
        for message in stream:
            if isinstance(message, kind):
                got.append(message)
                each(len(got))
                if len(got) >= count:
                    break
    finally:
        watchdog.cancel()
    return got
