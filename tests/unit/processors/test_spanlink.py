"""spanlink: time-based linking, splitting, label normalisation, holding,
bounds, and that links survive batch and both wire formats."""

from __future__ import annotations

import random
import time

import pytest

from telegen.component import ComponentID, Kind
from telegen.extensions.spanstore.config import SpanStoreConfig
from telegen.extensions.spanstore.extension import SpanStore
from telegen.formats import otlp, pprof
from telegen.pdata import CPU, Frame, FrameKind, Line, Profile, Profiles, SpanLink, make_labels
from telegen.processors.batch.batch import BatchProcessor
from telegen.processors.batch.config import BatchConfig
from telegen.processors.spanlink.config import SpanLinkConfig
from telegen.processors.spanlink.link import LinkCounts, link_profile, split_values
from telegen.processors.spanlink.processor import SpanLinkProcessor
from telegen.ptrace import SpanRecord
from telegen.telemetry import Registry
from telegen.testing.settings import counter, create_settings
from telegen.testing.sink import Sink

T0 = time.time_ns()     # reset before every test: spans older than the retention expire


@pytest.fixture(autouse=True)
def _fresh_epoch() -> None:
    global T0
    T0 = time.time_ns()


TRACE = "0af7651916cd43dd8448eb211c80319c"
LEAF = (Frame(FrameKind.NATIVE, 1, None, (Line("work"),)),)


def span(sid: str, start_ms: int, end_ms: int, tid: int = 11) -> SpanRecord:
    return SpanRecord(TRACE, sid, "", sid, T0 + start_ms * 1_000_000, T0 + end_ms * 1_000_000,
                      pid=100, tid=tid)


def ms(*values: int) -> list[int]:
    return [T0 + v * 1_000_000 for v in values]


class _Host:
    def __init__(self, store: SpanStore) -> None:
        self.store = store

    def extension(self, id: ComponentID) -> SpanStore | None:
        return self.store if id == ComponentID("spanstore") else None

    def report_error(self, component: ComponentID, error: BaseException) -> None:
        raise AssertionError(error)


def make_store(reg: Registry) -> SpanStore:
    store = SpanStore(create_settings(Kind.EXTENSION, "spanstore", reg),
                      SpanStoreConfig(endpoint=""))
    store.start(None)  # type: ignore[arg-type]
    return store


def cpu_profile(*samples: tuple[int, list[int], list[int]]) -> Profile:
    """samples: (tid, values, timestamps)."""
    p = Profile(name="cpu", sample_types=CPU, resource={"host.name": "h"})
    for tid, values, stamps in samples:
        p.add(LEAF, values, make_labels(**{"process.pid": 100, "thread.id": tid}), stamps)
    return p


def test_split_values_are_proportional_and_exact() -> None:
    rng = random.Random(1)
    assert split_values([10, 1000], [1, 1]) == [[5, 500], [5, 500]]
    for _ in range(500):
        weights = [rng.randrange(1, 9) for _ in range(rng.randrange(1, 5))]
        values = [rng.randrange(0, 10**9) for _ in range(2)]
        parts = split_values(values, weights)
        for col, v in enumerate(values):
            assert sum(p[col] for p in parts) == v
            for p, w in zip(parts, weights, strict=True):
                assert abs(p[col] - v * w / sum(weights)) < 1


def test_timestamps_in_several_spans_split_per_span() -> None:
    reg = Registry()
    store = make_store(reg)
    store.add_spans([span("a" * 16, 0, 100), span("b" * 16, 50, 80), span("c" * 16, 200, 300),
                     span("d" * 16, 0, 1000, tid=12)])
    p = cpu_profile((11, [5, 50_000_000], ms(10, 60, 70, 150, 250)),
                    (12, [1, 10_000_000], ms(500)), (13, [1, 10_000_000], ms(10)))
    counts = LinkCounts()
    link_profile(p, store.index.find, store.index.get, counts)
    got = {(dict(s.labels)["thread.id"], s.link.span_id if s.link else None): s for s in p}
    assert {k: (s.values, len(s.timestamps)) for k, s in got.items()} == {
        (11, "a" * 16): ([1, 10_000_000], 1), (11, "b" * 16): ([2, 20_000_000], 2),
        (11, None): ([1, 10_000_000], 1), (11, "c" * 16): ([1, 10_000_000], 1),
        (12, "d" * 16): ([1, 10_000_000], 1), (13, None): ([1, 10_000_000], 1)}
    assert p.totals() == [7, 70_000_000]
    assert (counts.linked, counts.unlinked, counts.split) == (5, 2, 1)


def test_span_labels_are_normalised_into_the_link() -> None:
    store = make_store(Registry())
    store.add_spans([span("e" * 16, 0, 10)])
    p = Profile(name="cpu", sample_types=CPU)
    p.add(LEAF, [1, 1], make_labels(span_id="1" * 16, trace_id="F" * 32, goroutine="7"))
    p.add(LEAF, [1, 1], make_labels(span_id="e" * 16))          # trace id from the store
    p.add(LEAF, [1, 1], make_labels(span_id="2" * 16))          # unknown: stays a label
    counts = LinkCounts()
    link_profile(p, store.index.find, store.index.get, counts)
    links = sorted((s.link.span_id if s.link else "", s.labels) for s in p)
    assert links == [("", (("span_id", "2" * 16),)),
                     ("1" * 16, (("goroutine", "7"),)), ("e" * 16, ())]
    assert next(s for s in p if s.link and s.link.span_id == "1" * 16).link == \
        SpanLink("f" * 32, "1" * 16)
    assert (counts.normalised, counts.unresolved) == (2, 1)


def processor(reg: Registry, store: SpanStore, sink: Sink, **cfg: object) -> SpanLinkProcessor:
    config = SpanLinkConfig(**cfg)  # type: ignore[arg-type]
    config.validate()
    proc = SpanLinkProcessor(create_settings(Kind.PROCESSOR, "spanlink", reg), config, sink)
    proc.start(_Host(store))  # type: ignore[arg-type]
    return proc


def test_samples_wait_for_late_spans_then_link_and_reach_the_view() -> None:
    reg = Registry()
    store = make_store(reg)
    sink = Sink()
    proc = processor(reg, store, sink, delay=0.6)
    try:
        proc.consume(Profiles([cpu_profile((11, [2, 20], ms(10, 20)))]))
        time.sleep(0.2)
        assert sink.batches == []                        # held
        store.add_spans([span("a" * 16, 0, 100)])       # the span ends and arrives later
        assert sink.wait_for(1, 5)
        [s] = sink.profiles()[0].samples
        assert s.link == SpanLink(TRACE, "a" * 16)
        assert [p.totals() for p in store.profiles.profiles("a" * 16)] == [[2, 20]]
        store.add_spans([span("f" * 16, 15, 30, tid=99)])   # after its samples went out
        assert counter(reg, "spanstore_late_spans") == 1
        assert counter(reg, "spanlink_linked_samples") == 2
        # batches with nothing to link by time pass straight through
        plain = Profile(name="cpu", sample_types=CPU)
        plain.add(LEAF, [1, 1])
        proc.consume(Profiles([plain]))
        assert len(sink.batches) == 2
    finally:
        proc.shutdown()


def test_pending_samples_are_bounded_and_shutdown_flushes() -> None:
    reg = Registry()
    store = make_store(reg)
    sink = Sink()
    proc = processor(reg, store, sink, delay=3600, max_pending_samples=3)
    for i in range(4):
        proc.consume(Profiles([cpu_profile((11, [1, 1], ms(i)), (12, [1, 1], ms(i)))]))
    assert sink.wait_for(2, 5)
    assert counter(reg, "spanlink_early_released_samples") >= 4
    proc.shutdown()
    assert sum(b.sample_count() for b in sink.batches) == 8
    assert counter(reg, "spanlink_pending_samples") == 0


def test_links_survive_batch_and_both_wire_formats() -> None:
    sink = Sink()
    batch = BatchProcessor(create_settings(Kind.PROCESSOR, "batch"), BatchConfig(timeout=3600),
                           sink)
    for sid in ("a" * 16, "b" * 16, "a" * 16):
        p = Profile(name="cpu", sample_types=CPU, resource={"host.name": "h"})
        p.add(LEAF, [1, 10], make_labels(**{"thread.id": 1}), ms(1), SpanLink(TRACE, sid))
        batch.consume(Profiles([p]))
    batch.shutdown()
    [merged] = sink.profiles()
    assert sorted((s.link.span_id, s.values[0]) for s in merged if s.link) == [
        ("a" * 16, 2), ("b" * 16, 1)]
    back = otlp.decode_request(otlp.parse_request(
        otlp.encode_request([merged]).SerializeToString()))[0]
    assert sorted((str(s.link), s.values[0]) for s in back) == sorted(
        (str(s.link), s.values[0]) for s in merged)
    again = pprof.decode(pprof.encode(merged))
    assert sorted((str(s.link), s.values[0]) for s in again) == sorted(
        (str(s.link), s.values[0]) for s in merged)
