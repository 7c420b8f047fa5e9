"""Riding out a database outage: retry a store operation with backoff while the server is away.

pymongo already waits ``serverSelectionTimeoutMS`` for a server, and retries a
read once; a restart that takes longer (or a write whose connection dropped)
raises :class:`pymongo.errors.ConnectionFailure` into the step, and the worker
would lose its firework. Every store operation is idempotent on its unique key,
so repeating it after a reconnect is safe: :func:`retry_when_unreachable` does
that, with exponential backoff up to ``$MFAL_DB_RETRY_S`` seconds in all, and
logs one line per attempt (the operation, the attempt, the wait, the error
with any credentials redacted).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from typing import Callable, TypeVar

from pymongo.errors import ConnectionFailure

from mfal.errors import DatabaseError

LOG = logging.getLogger("mfal.store")
FIRST_WAIT_S = 0.5
MAX_WAIT_S = 30.0
DEFAULT_PATIENCE_S = 300.0

T = TypeVar("T")


def patience_s() -> float:
    """Total time to keep retrying (``$MFAL_DB_RETRY_S``, default 300 s; 0 disables retries)."""
    value = os.environ.get("MFAL_DB_RETRY_S", str(DEFAULT_PATIENCE_S))
    try:
        seconds = float(value)
    except ValueError:
        raise DatabaseError(f"MFAL_DB_RETRY_S must be a number of seconds; got {value!r}") from None
    if seconds < 0:
        raise DatabaseError(f"MFAL_DB_RETRY_S must be >= 0; got {value!r}")
    return seconds


def call_with_retry(operation: Callable[[], T], what: str) -> T:
    """``operation()``, repeated with backoff while the database cannot be reached."""
    deadline = time.monotonic() + patience_s()
    wait, attempt = FIRST_WAIT_S, 1
    while True:
        try:
            result = operation()
        except ConnectionFailure as exc:
            reason = _short_reason(exc)
            if time.monotonic() + wait > deadline:
                raise DatabaseError(f"database unreachable while {what} after {attempt} attempt(s): "
                                    f"{reason}") from None
            LOG.warning("mfal: database unreachable while %s (attempt %d failed: %s); retrying in %.1f s",
                        what, attempt, reason, wait)
            time.sleep(wait)
            wait, attempt = min(2 * wait, MAX_WAIT_S), attempt + 1
            continue
        if attempt > 1:
            LOG.warning("mfal: database reachable again; %s succeeded at attempt %d", what, attempt)
        return result


def _short_reason(exc: ConnectionFailure) -> str:
    """The first part of pymongo's message (address and error), without topology and timeouts."""
    from mfal.connection import redact

    text = str(exc).split(", Timeout:")[0]
    return redact(re.sub(r"\s*\(configured timeouts:[^)]*\)", "", text))


def retry_when_unreachable(what: str):
    """Decorator: the method is retried by :func:`call_with_retry`; ``what`` names it in the log."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            return call_with_retry(lambda: method(*args, **kwargs), what)

        return wrapper

    return decorate
