from telegen.telemetry import Registry, sum_series


def test_sum_series_adds_the_series_whose_labels_match() -> None:
    reg = Registry()
    reg.counter("ebpf_unwind_full", process="a", component="ebpf/x").add(3)
    reg.counter("ebpf_unwind_full", process="b", component="ebpf/x").add(4)
    reg.counter("ebpf_unwind_full_other", process="a").add(100)
    snap = reg.snapshot()
    assert sum_series(snap, "ebpf_unwind_full") == 7
    assert sum_series(snap, "ebpf_unwind_full", process="a") == 3
    assert sum_series(snap, "ebpf_unwind_full", process="c") == 0
