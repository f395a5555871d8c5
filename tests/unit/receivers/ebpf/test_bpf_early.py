"""compile_early_for (#21): `telegen run` starts the BPF compile for the
ebpf receivers its pipelines use, with exactly the options the receiver's
start builds (else the early child would be wasted and a second started)."""

from __future__ import annotations

from typing import Any

import pytest

from telegen import config
from telegen.receivers.ebpf import bpf_loader
from telegen.receivers.ebpf.targets import Targets

TARGETED = """
receivers:
  ebpf:
    pids: [1234]
    memory: true
    unwinding: frame_pointer
  ebpf/unused:
    mutex: true
exporters:
  pprof_file:
    directory: ./profiles
service:
  pipelines:
    profiles:
      receivers: [ebpf]
      exporters: [pprof_file]
"""


@pytest.fixture()
def started(monkeypatch: pytest.MonkeyPatch) -> list[bpf_loader.BpfOptions]:
    calls: list[bpf_loader.BpfOptions] = []

    def record(options: bpf_loader.BpfOptions) -> bool:
        calls.append(options)
        return True
    monkeypatch.setattr(bpf_loader, "compile_early", record)
    return calls


def _receiver_options(c: Any) -> bpf_loader.BpfOptions:
    """What the receiver's start asks LoadedBpf for."""
    targets = Targets(pids=c.pids, pattern=c.name_pattern(), exclude_pids=c.exclude_pids,
                      self_pid=1, self_profile=c.self_profile)
    return bpf_loader.options_for(c, filtering=targets.filtering)


def test_the_default_config_starts_one_compile_with_the_receivers_options(
        started: list[bpf_loader.BpfOptions]) -> None:
    cfg = config.load_default()
    assert bpf_loader.compile_early_for(cfg) == 1
    (c,) = [c for cid, c in cfg.components[config.Kind.RECEIVER].items() if cid.type == "ebpf"]
    assert started == [_receiver_options(c)]
    assert started[0].cpu and started[0].off_cpu and started[0].user_stacks


def test_only_receivers_a_pipeline_uses_and_their_targeting(
        started: list[bpf_loader.BpfOptions]) -> None:
    cfg = config.load_text(TARGETED, "test")
    assert bpf_loader.compile_early_for(cfg) == 1           # not ebpf/unused
    (options,) = started
    assert options.filter_targets and options.memory and not options.mutex
    assert not options.user_stacks
