"""exporterhelper: backoff, classification, queues (memory and on disk), sender."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from telegen.component import ConfigError, Kind, PermanentError
from telegen.config import load_text
from telegen.helpers.exporterhelper import (
    Backoff,
    MemoryQueue,
    QueueConfig,
    QueuedSender,
    QueueFullError,
    Request,
    RetryableError,
    RetryConfig,
    grpc_error,
    http_error,
    parse_retry_after,
)
from telegen.helpers.exporterhelper.rpcstatus import DETAILS_KEY, retry_delay, status_details
from telegen.telemetry import Registry
from telegen.testing.settings import counter, create_settings


def test_backoff_grows_jittered_and_capped() -> None:
    cfg = RetryConfig(initial_interval=1.0, max_interval=4.0, max_elapsed_time=0,
                      multiplier=2.0, randomization_factor=0.5)
    b = Backoff(cfg, random.Random(7))
    waits = [b.next_wait() for _ in range(8)]
    bases = [1, 2, 4, 4, 4, 4, 4, 4]
    for w, base in zip(waits, bases, strict=True):
        assert w is not None and 0.5 * base <= w <= 1.5 * base
    assert len({round(w or 0, 6) for w in waits[2:]}) > 1      # jittered, not constant


def test_backoff_honours_server_delay_and_gives_up_after_max_elapsed() -> None:
    cfg = RetryConfig(initial_interval=0.1, max_interval=0.2, max_elapsed_time=5.0)
    b = Backoff(cfg)
    assert b.next_wait(3.0) == 3.0
    assert b.next_wait(10.0) is None          # would pass max_elapsed_time


@pytest.mark.parametrize("code, retry", [
    (1, True), (4, True), (10, True), (11, True), (14, True), (15, True),
    (2, False), (3, False), (5, False), (7, False), (9, False), (12, False), (13, False),
    (16, False),
])
def test_grpc_classification(code: int, retry: bool) -> None:
    assert isinstance(grpc_error(code, "x", None), RetryableError) is retry
    assert isinstance(grpc_error(code, "x", None), PermanentError) is not retry


def test_resource_exhausted_retries_only_with_retry_info() -> None:
    assert isinstance(grpc_error(8, "x", None), PermanentError)
    err = grpc_error(8, "x", 2.5)
    assert isinstance(err, RetryableError) and err.delay_s == 2.5


@pytest.mark.parametrize("status, retry", [(429, True), (500, True), (502, True),
                                           (503, True), (400, False), (401, False),
                                           (404, False), (413, False)])
def test_http_classification(status: int, retry: bool) -> None:
    assert isinstance(http_error(status, "x", None), RetryableError) is retry


def test_retry_after_seconds_and_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    when = parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0)
    assert when == pytest.approx(10.0)


def test_rpc_status_retry_info_round_trip() -> None:
    data = status_details(8, "slow down", 1.25)
    assert retry_delay([("other", b"x"), (DETAILS_KEY, data)]) == 1.25
    assert retry_delay([(DETAILS_KEY, status_details(14, "no info"))]) is None
    assert retry_delay([(DETAILS_KEY, b"\xff\xff garbage")]) is None


def test_request_file_format_round_trip() -> None:
    r = Request(b"\x00payload", 12, {"url": "http://x/ingest?a=1"})
    assert Request.from_bytes(r.to_bytes()) == r
    with pytest.raises(ValueError):
        Request.from_bytes(b"nope")


def test_memory_queue_is_bounded() -> None:
    q = MemoryQueue(2)
    assert q.put(Request(b"1")) and q.put(Request(b"2")) and not q.put(Request(b"3"))
    item = q.get(0.1)
    assert item is not None and item[1].payload == b"1"
    assert q.size() == 1


class Flaky:
    """A real send function: fails the first ``failures`` calls with ``error``."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[float] = []
        self.sent: list[bytes] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> None:
        with self.lock:
            self.calls.append(time.monotonic())
            if len(self.calls) <= self.failures:
                raise self.error
            self.sent.append(request.payload)


FAST = RetryConfig(initial_interval=0.05, max_interval=0.1, max_elapsed_time=5.0)


def _sender(send: Flaky, reg: Registry, queue: QueueConfig | None = None,
            retry: RetryConfig = FAST) -> QueuedSender:
    return QueuedSender(create_settings(Kind.EXPORTER, "otlp/test", reg),
                        queue or QueueConfig(num_consumers=1), retry, send)


def _wait(pred: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_retryable_failures_are_retried_until_sent() -> None:
    reg = Registry()
    send = Flaky(3, RetryableError("unavailable"))
    s = _sender(send, reg)
    s.start()
    s.submit(Request(b"a", 5))
    assert _wait(lambda: send.sent == [b"a"])
    s.shutdown(1)
    assert counter(reg, "exporter_retries") == 3
    assert counter(reg, "exporter_sent_samples") == 5
    assert counter(reg, "exporter_send_failed_samples") == 0


def test_server_delay_is_honoured() -> None:
    send = Flaky(1, RetryableError("throttled", delay_s=0.6))
    s = _sender(send, Registry())
    s.start()
    s.submit(Request(b"a", 1))
    assert _wait(lambda: send.sent)
    s.shutdown(1)
    assert send.calls[1] - send.calls[0] >= 0.6


def test_permanent_error_drops_without_retry() -> None:
    reg = Registry()
    send = Flaky(1, PermanentError("bad request"))
    s = _sender(send, reg)
    s.start()
    s.submit(Request(b"a", 4))
    assert _wait(lambda: counter(reg, "exporter_send_failed_samples") == 4)
    s.shutdown(1)
    assert len(send.calls) == 1 and counter(reg, "exporter_retries") == 0


def test_full_queue_refuses_and_counts() -> None:
    reg = Registry()
    block = threading.Event()

    def stuck(request: Request) -> None:
        block.wait(5)

    s = QueuedSender(create_settings(Kind.EXPORTER, "otlp/full", reg),
                     QueueConfig(queue_size=1, num_consumers=1), FAST, stuck)
    s.start()
    s.submit(Request(b"1", 1))           # taken by the consumer
    assert _wait(lambda: counter(reg, "exporter_queue_size") == 0)
    s.submit(Request(b"2", 1))           # waits in the queue
    with pytest.raises(QueueFullError):
        s.submit(Request(b"3", 7))
    assert counter(reg, "exporter_enqueue_failed_samples") == 7
    assert counter(reg, "exporter_queue_size") == 1
    block.set()
    s.shutdown(2)


def test_disabled_queue_sends_in_the_caller_and_raises() -> None:
    send = Flaky(99, PermanentError("no"))
    s = _sender(send, Registry(), QueueConfig(enabled=False))
    s.start()
    with pytest.raises(PermanentError):
        s.submit(Request(b"x", 1))
    assert len(send.calls) == 1


def test_persistent_queue_survives_a_restart(tmp_path: Path) -> None:
    reg = Registry()
    down = Flaky(10**6, RetryableError("backend down"))
    q = QueueConfig(num_consumers=1, storage=str(tmp_path))
    s = _sender(down, reg, q)
    s.start()
    for i in range(3):
        s.submit(Request(f"r{i}".encode(), 2, {"n": str(i)}))
    files = sorted((tmp_path / "otlp_test").glob("*.req"))
    assert len(files) == 3
    s.shutdown(0.5)                      # backend still down: everything stays on disk
    assert len(sorted((tmp_path / "otlp_test").glob("*.req"))) == 3
    assert counter(reg, "exporter_send_failed_samples") == 0
    up = Flaky(0, RetryableError("unused"))
    reg2 = Registry()
    again = _sender(up, reg2, q)
    again.start()
    assert _wait(lambda: len(up.sent) == 3)
    again.shutdown(1)
    assert up.sent == [b"r0", b"r1", b"r2"]
    assert counter(reg2, "exporter_requests_restored") == 3
    assert not list((tmp_path / "otlp_test").glob("*"))


def test_shared_schema_fragments_validate_exporter_keys() -> None:
    base = """
receivers:
  pprof: {paths: ["/tmp/*.pb.gz"]}
exporters:
  otlp:
    endpoint: localhost:4317
    %s
service:
  pipelines:
    profiles: {receivers: [pprof], exporters: [otlp]}
"""
    cfg = load_text(base % "retry_on_failure: {initial_interval: 250ms, max_elapsed_time: 2m}",
                    "t.yaml")
    otlp = next(iter(cfg.components[Kind.EXPORTER].values()))
    assert otlp.retry_on_failure.initial_interval == 0.25
    assert otlp.retry_on_failure.max_elapsed_time == 120
    with pytest.raises(ConfigError, match=r"exporters::otlp::sending_queue: unknown key "
                                          r"\"sise\""):
        load_text(base % "sending_queue: {sise: 3}", "t.yaml")
    with pytest.raises(ConfigError, match=r"retry_on_failure::max_interval: invalid duration"):
        load_text(base % "retry_on_failure: {max_interval: soon}", "t.yaml")
    with pytest.raises(ConfigError, match=r"num_consumers: must be between 1 and 64"):
        load_text(base % "sending_queue: {num_consumers: 0}", "t.yaml")
