"""The parse budget: a watchdog stops a step that runs over its CPU time or
memory growth from outside the step's code, the object stays rejected, and
nothing is raised into the thread once a step has returned."""

from __future__ import annotations

import time

import pytest

from telegen.symbols.budget import Budget, ParseLimits, Rejected


def _spin_forever() -> None:
    while True:
        try:
            pass
        except Exception:      # parsing code swallows Exception: the budget is not one
            pass


def _grow_forever() -> None:
    keep = []
    while True:
        keep.append(bytearray(1 << 20))


def test_a_step_over_its_cpu_time_is_stopped_and_the_object_rejected() -> None:
    budget = Budget(ParseLimits(step_cpu_s=0.3), "spinner")
    t0 = time.monotonic()
    with pytest.raises(Rejected) as err:
        budget.run(_spin_forever)
    assert err.value.reason == "cpu_time" and time.monotonic() - t0 < 30
    with pytest.raises(Rejected):          # never parsed again
        budget.run(lambda: 1)


def test_a_step_over_its_memory_growth_is_stopped() -> None:
    budget = Budget(ParseLimits(step_memory_bytes=64 << 20), "grower")
    with pytest.raises(Rejected) as err:
        budget.run(_grow_forever)
    assert err.value.reason == "memory"


def test_quick_steps_pass_and_nothing_arrives_after_them() -> None:
    budget = Budget(ParseLimits(step_cpu_s=0.05))
    for i in range(200):
        assert budget.run(lambda x: x + 1, i) == i + 1
    end = time.thread_time() + 0.3          # busy after the steps: no stray exception
    while time.thread_time() < end:
        pass
    assert not budget.rejected


def test_the_object_account_refills() -> None:
    limits = ParseLimits(step_cpu_s=1.0, object_cpu_s=0.2, object_refill_s=0.5)
    budget = Budget(limits)

    def burn(s: float) -> None:
        end = time.thread_time() + s
        while time.thread_time() < end:
            pass
    budget.run(burn, 0.15)
    time.sleep(0.6)                          # refilled
    budget.run(burn, 0.15)
    with pytest.raises(Rejected):            # overdrawn at once: stopped at what is left
        budget.run(burn, 0.5)
