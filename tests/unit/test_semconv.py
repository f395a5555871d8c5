"""telegen.semconv: the names, the service.name order, one profile per
process, and the older names still understood where users type them."""

from __future__ import annotations

from pathlib import Path

from telegen.cli import main
from telegen.formats.pprof import encode
from telegen.pdata import CPU, Frame, FrameKind, Line, Profile, make_labels
from telegen.semconv import (
    canonical,
    canonical_labels,
    names_of,
    service_name,
    split_by_process,
    with_resource_labels,
)

F = {n: Frame(FrameKind.NATIVE, i + 1, None, (Line(n),)) for i, n in enumerate("abc")}


def host_profile() -> Profile:
    """As the ebpf receiver builds it: process attributes on samples."""
    p = Profile(name="cpu", sample_types=CPU, start_ns=10, duration_ns=5,
                resource={"host.name": "web-1"}, comments=["3 samples lost"])
    for pid, tid, leaf, n in ((7, 7, "a", 3), (7, 8, "b", 2), (9, 9, "a", 4)):
        attrs: dict[str, str | int] = {
            "process.pid": pid, "process.executable.name": f"app{pid}",
            "container.id": "c" * 64 if pid == 9 else "", "thread.id": tid,
            "thread.name": f"t{tid}"}
        p.add((F[leaf], F["c"]), [n, n * 10], make_labels(**attrs))
    p.add((F["c"],), [1, 10], make_labels(**{"telegen.lost": "counts_full"}))
    return p


def test_service_name_order() -> None:
    res = {"process.executable.name": "java", "k8s.container.name": "cart",
           "service.name": "checkout"}
    assert service_name(res, "configured") == "configured"
    assert service_name(res) == "checkout"
    del res["service.name"]
    assert service_name(res) == "cart"
    del res["k8s.container.name"]
    assert service_name(res) == "java"
    assert service_name({"process.executable.path": "/usr/bin/python3.12"}) == "python3.12"
    assert service_name({"host.name": "h"}) == "unknown_service"


def test_split_by_process_moves_who_to_the_resource() -> None:
    p = host_profile()
    parts = split_by_process([p])
    by_pid = {q.resource.get("process.pid"): q for q in parts}
    assert set(by_pid) == {7, 9, None}
    seven = by_pid[7]
    assert seven.resource == {"host.name": "web-1", "process.pid": 7,
                              "process.executable.name": "app7"}
    assert by_pid[9].resource["container.id"] == "c" * 64
    assert {dict(s.labels)["thread.id"] for s in seven} == {7, 8}
    assert all(set(dict(s.labels)) == {"thread.id", "thread.name"} for s in seven)
    # totals kept; the loss note stays once, on the part without a process
    assert [sum(q.totals()[0] for q in parts)] == [p.totals()[0]]
    assert by_pid[None].comments == ["3 samples lost"] and not seven.comments
    # already split: returned as it is, nothing copied
    assert split_by_process([seven])[0] is seven


def test_older_names_are_aliases_in_one_place() -> None:
    assert canonical("pid") == "process.pid" and canonical("comm") == "thread.name"
    assert canonical("tid") == "thread.id" and canonical("thread.name") == "thread.name"
    assert set(names_of("process.pid")) == {"process.pid", "pid"}
    old = make_labels(pid=4, comm="w", tid=5)
    assert canonical_labels(old) == (("process.pid", 4), ("thread.id", 5), ("thread.name", "w"))
    single = split_by_process([host_profile()])[0]
    grouped = with_resource_labels(single, ["process.pid"])
    assert all(dict(s.labels)["process.pid"] == single.resource["process.pid"] for s in grouped)


def test_top_groups_by_new_and_old_names(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    old = Profile(name="cpu", sample_types=CPU, duration_ns=1)
    old.add((F["a"],), [5, 50], make_labels(pid=1, comm="x"))     # an older telegen's file
    old.add((F["b"],), [2, 20], make_labels(pid=2, comm="y"))
    (tmp_path / "old.pb.gz").write_bytes(encode(old))
    one = split_by_process([host_profile()])[0]                    # one process: its resource
    (tmp_path / "one.pb.gz").write_bytes(encode(one))
    for name in ("pid", "process.pid"):
        assert main(["top", str(tmp_path / "old.pb.gz"), "--group-by", name]) == 0
        out = capsys.readouterr().out
        assert out.index("== process.pid=1 ==") < out.index("== process.pid=2 ==")
    assert main(["top", str(tmp_path / "one.pb.gz"), "--group-by", "process.pid",
                 "--group-by", "thread.name"]) == 0
    out = capsys.readouterr().out
    assert "== process.pid=7, thread.name=t7 ==" in out and "thread.name=t8" in out
    svg = tmp_path / "g.folded"
    assert main(["flamegraph", str(tmp_path / "old.pb.gz"), "-o", str(svg),
                 "--group-by", "comm"]) == 0
    assert "thread.name=x" in svg.read_text()
