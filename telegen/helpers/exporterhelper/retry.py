"""What to do when a send fails: retry (with jittered exponential backoff and
any delay the server asked for) or drop, classified as the Collector does."""

from __future__ import annotations

import email.utils
import random
import time

from telegen.component import PermanentError
from telegen.helpers.exporterhelper.config import RetryConfig

# gRPC status codes (grpc.StatusCode values), by number, so classification
# works on numbers read from HTTP/gRPC responses too.
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
RESOURCE_EXHAUSTED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS = 8, 10, 11, 14, 15
_RETRYABLE_GRPC = {CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS}


class RetryableError(Exception):
    """A send failed but may succeed later; ``delay_s`` is what the server asked
    for (gRPC RetryInfo, HTTP Retry-After), if anything."""

    def __init__(self, message: str, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


def grpc_error(code: int, message: str, retry_delay_s: float | None) -> Exception:
    """Unavailable, DeadlineExceeded, Aborted, OutOfRange, DataLoss and
    Cancelled retry; ResourceExhausted only when the server sent RetryInfo; the
    rest are permanent."""
    if code in _RETRYABLE_GRPC or (code == RESOURCE_EXHAUSTED and retry_delay_s is not None):
        return RetryableError(message, retry_delay_s)
    return PermanentError(message)


def http_error(status: int, message: str, retry_after: str | None) -> Exception:
    """429 and 5xx retry (honouring Retry-After); other statuses are permanent."""
    if status == 429 or 500 <= status <= 599:
        return RetryableError(message, parse_retry_after(retry_after))
    return PermanentError(message)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class Backoff:
    """Jittered exponential backoff for one request."""

    def __init__(self, config: RetryConfig, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng or random.Random()
        self._current = config.initial_interval
        self.started = time.monotonic()

    def next_wait(self, server_delay_s: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        cfg = self._config
        rf = cfg.randomization_factor
        wait = self._current * (1 + rf * (2 * self._rng.random() - 1))
        self._current = min(cfg.max_interval, self._current * cfg.multiplier)
        if server_delay_s is not None:
            wait = max(wait, server_delay_s)
        if cfg.max_elapsed_time > 0:
            elapsed = time.monotonic() - self.started
            if elapsed + wait > cfg.max_elapsed_time:
                return None
        return wait
