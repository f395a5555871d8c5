"""telegen.helpers.delta: cumulative profiles to per-window deltas."""

from __future__ import annotations

from conftest import mutex_profile

from telegen.helpers.delta import CumulativeDelta, DeltaOutcome
from telegen.pdata import Profile

S = 1_000_000_000


def delays(p: Profile | None) -> dict[str, int]:
    if p is None:
        return {}
    return {s.stack[1].name: s.values[1] for s in p}


def test_first_sight_is_a_baseline_then_differences() -> None:
    d = CumulativeDelta()
    out, how = d.delta("t", mutex_profile({"main.a": 5 * S}), now_ns=10 * S)
    assert (out, how) == (None, DeltaOutcome.BASELINE)
    out, how = d.delta("t", mutex_profile({"main.a": 7 * S, "main.b": S}), now_ns=20 * S)
    assert how is DeltaOutcome.DELTA and out is not None
    assert delays(out) == {"main.a": 2 * S, "main.b": S}
    assert (out.start_ns, out.duration_ns) == (10 * S, 10 * S)
    # nothing new: no samples (all-zero differences are left out)
    out, how = d.delta("t", mutex_profile({"main.a": 7 * S, "main.b": S}), now_ns=30 * S)
    assert how is DeltaOutcome.DELTA and out is not None and len(out) == 0


def test_sum_of_deltas_is_last_minus_first_never_double() -> None:
    d = CumulativeDelta()
    readings = [3, 4, 4, 9, 15, 16]
    emitted = 0
    for i, v in enumerate(readings):
        out, _ = d.delta("t", mutex_profile({"main.a": v * S}), now_ns=i * S)
        emitted += sum(delays(out).values())
    assert emitted == (readings[-1] - readings[0]) * S


def test_values_going_down_mean_restart_and_the_new_process_counts_once() -> None:
    d = CumulativeDelta()
    d.delta("t", mutex_profile({"main.a": 50 * S}), now_ns=S)
    d.delta("t", mutex_profile({"main.a": 60 * S}), now_ns=2 * S)
    out, how = d.delta("t", mutex_profile({"main.a": 2 * S}), now_ns=3 * S)   # restarted
    assert how is DeltaOutcome.RESET and delays(out) == {"main.a": 2 * S}
    out, how = d.delta("t", mutex_profile({"main.a": 3 * S}), now_ns=4 * S)
    assert how is DeltaOutcome.DELTA and delays(out) == {"main.a": S}
    assert d.resets == 1


def test_identity_change_is_a_restart_even_when_values_grew() -> None:
    d = CumulativeDelta()
    d.delta("t", mutex_profile({"main.a": S}), now_ns=10 * S, identity=(1, 5 * S))
    out, how = d.delta("t", mutex_profile({"main.a": 4 * S}), now_ns=20 * S,
                       identity=(2, 15 * S), started_ns=15 * S)
    assert how is DeltaOutcome.RESET and delays(out) == {"main.a": 4 * S}


def test_a_process_older_than_the_previous_scrape_is_only_a_baseline() -> None:
    d = CumulativeDelta()
    d.delta("t", mutex_profile({"main.a": S}), now_ns=10 * S, identity=(1, 5 * S))
    out, how = d.delta("t", mutex_profile({"main.a": 40 * S}), now_ns=20 * S,
                       identity=(2, 2 * S), started_ns=2 * S)
    assert (out, how) == (None, DeltaOutcome.BASELINE)
    out, _ = d.delta("t", mutex_profile({"main.a": 41 * S}), now_ns=30 * S, identity=(2, 2 * S))
    assert delays(out) == {"main.a": S}


def test_a_single_value_going_down_is_clamped_not_negative() -> None:
    d = CumulativeDelta()
    d.delta("t", mutex_profile({"main.a": 100 * S, "main.b": 1000 * S}), now_ns=S)
    out, how = d.delta("t", mutex_profile({"main.a": 99 * S, "main.b": 1005 * S}), now_ns=2 * S)
    assert how is DeltaOutcome.DELTA
    assert delays(out) == {"main.b": 5 * S}
    assert all(v >= 0 for s in out or () for v in s.values)
    assert d.clamped_values >= 1


def test_series_are_independent_and_can_be_forgotten() -> None:
    d = CumulativeDelta()
    d.delta(("a", "mutex"), mutex_profile({"main.a": S}), now_ns=S)
    d.delta(("b", "mutex"), mutex_profile({"main.a": 9 * S}), now_ns=S)
    out, _ = d.delta(("a", "mutex"), mutex_profile({"main.a": 2 * S}), now_ns=2 * S)
    assert delays(out) == {"main.a": S}
    assert d.retain([("a", "mutex")]) == 1
    assert d.series() == [("a", "mutex")]
    out, how = d.delta(("b", "mutex"), mutex_profile({"main.a": 10 * S}), now_ns=2 * S)
    assert how is DeltaOutcome.BASELINE       # forgotten: starts over


def test_resource_and_frames_are_kept() -> None:
    d = CumulativeDelta()
    first = mutex_profile({"main.a": S})
    first.resource["service.name"] = "api"
    d.delta("t", first, now_ns=S)
    second = mutex_profile({"main.a": 3 * S})
    second.resource["service.name"] = "api"
    out, _ = d.delta("t", second, now_ns=2 * S)
    assert out is not None
    assert (out.name, out.sample_types, out.resource) == ("mutex", second.sample_types,
                                                          {"service.name": "api"})
    assert [f.lines for f in out.samples[0].stack] == [f.lines for f in second.samples[0].stack]
