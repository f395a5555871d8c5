"""py-spy speedscope output (real files from py-spy 0.4 in tests/testdata/python)
-> thread stacks -> pdata frames named ``module.function``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from telegen.pdata import FrameKind
from telegen.receivers.python.convert import FrameCache, build_profile
from telegen.receivers.python.engine import RawFrame
from telegen.receivers.python.pyspy import parse_speedscope
from telegen.sdk.names import function_name, module_from_path

TESTDATA = Path(__file__).resolve().parents[3] / "testdata" / "python"


def load(name: str) -> dict[str, Any]:
    data = json.loads((TESTDATA / name).read_text())
    assert isinstance(data, dict)
    return data


def test_twohot_stacks_leaf_first_with_counts() -> None:
    data = load("pyspy-twohot-3.12.json")
    stacks = parse_speedscope(data)
    total = sum(s.count for s in stacks)
    raw_total = sum(len(p["samples"]) for p in data["profiles"])
    assert total == raw_total > 50
    leaves = {s.frames[0].function for s in stacks}
    assert leaves <= {"Worker.hot_a", "Worker.hot_b"}
    for s in stacks:
        assert [f.function for f in s.frames[1:]] == ["main", "<module>"]
        assert s.frames[0].file.endswith("tests/testdata/python/twohot.py")
        assert s.frames[0].line > 0 and not s.frames[0].native
        assert s.tid > 0
    share_a = sum(s.count for s in stacks if s.frames[0].function == "Worker.hot_a") / total
    assert 0.55 < share_a < 0.78        # a 2:1 program, 1 s of samples


def test_thread_names_idle_threads_and_native_frames() -> None:
    stacks = parse_speedscope(load("pyspy-threads-idle-native-3.13.json"))
    names = {s.thread_name for s in stacks}
    assert names == {"MainThread", "spinner", "sleepy"}
    sleepy = [s for s in stacks if s.thread_name == "sleepy"]
    assert any(f.native and f.function == "clock_nanosleep" and "libc" in f.file
               for s in sleepy for f in s.frames)
    python_frames = [f for s in sleepy for f in s.frames if not f.native]
    assert any(f.function == "sleeper" and f.file == "/tmp/thr.py" for f in python_frames)
    assert not any(f.function.startswith("thread (") for s in stacks for f in s.frames)


def test_profile_from_stacks() -> None:
    stacks = parse_speedscope(load("pyspy-threads-idle-native-3.13.json"))
    prof = build_profile(stacks, rate=50, start_ns=1, duration_ns=10**9,
                         resource={"process.pid": 42}, wall=True, frames=FrameCache())
    assert prof.name == "wall" and prof.period == 20_000_000
    assert prof.totals()[0] == sum(s.count for s in stacks)
    assert prof.totals()[1] == prof.totals()[0] * 20_000_000
    sample = next(s for s in prof if dict(s.labels)["thread.name"] == "spinner")
    labels = dict(sample.labels)   # the thread; the process is the resource's
    assert isinstance(labels["thread.id"], int) and labels["thread.id"] > 0
    assert "process.pid" not in labels and prof.resource["process.pid"] == 42
    kinds = {f.kind for s in prof for f in s.stack}
    assert kinds == {FrameKind.PYTHON, FrameKind.NATIVE}
    names = {f.name for s in prof for f in s.stack if f.kind is FrameKind.PYTHON}
    assert {"thr.spin", "threading.Thread.run", "thr.sleeper"} <= names


@pytest.mark.parametrize(("path", "module"), [
    ("/root/.pyenv/versions/3.13.0/lib/python3.13/asyncio/base_events.py", "asyncio.base_events"),
    ("/usr/lib/python3/dist-packages/yaml/__init__.py", "yaml"),
    ("/srv/venv/lib/python3.11/site-packages/grpc/_channel.py", "grpc._channel"),
    ("/srv/app/server.py", "server"),
    ("<frozen importlib._bootstrap>", "importlib._bootstrap"),
])
def test_module_names(path: str, module: str) -> None:
    assert module_from_path(path) == module


def test_function_names() -> None:
    assert function_name("", "Worker.run", "/srv/app/worker.py") == "worker.Worker.run"
    assert function_name("__main__", "main", "/srv/app/server.py") == "server.main"
    assert function_name("pkg.mod", "f", "/x/y.py") == "pkg.mod.f"
    cache = FrameCache()
    f = cache.frame(RawFrame("Task.run", "/a/lib/python3.12/asyncio/tasks.py", 7))
    assert f.kind is FrameKind.PYTHON and f.name == "asyncio.tasks.Task.run"
    assert f.lines[0].file == "/a/lib/python3.12/asyncio/tasks.py" and f.lines[0].line == 7
    assert cache.frame(RawFrame("Task.run", "/a/lib/python3.12/asyncio/tasks.py", 7)) is f
