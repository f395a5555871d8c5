"""The BPF event ring: process lifecycle (new / exec / exit) and, with
``timestamps: true``, one event per sample.

One named thread polls the ring; the window reader calls ``drain()`` to
consume what is left of a closed window before building it. The rings
(:mod:`telegen.bpf.ringbuf`, read through mmap) have one consumer position
each and are not thread-safe, so both go through one lock.
The poll thread holds that lock through each 100 ms poll and would take it
again at once: a lock is not fair, so on an idle machine ``drain()`` could
wait for it for many seconds (measured: 8.4 s, a window that never closed).
A waiting ``drain()`` therefore makes the poll thread stand aside until
it is done.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from telegen.receivers.ebpf.keys import CEvent, RawKey, raw_key

log = logging.getLogger(__name__)

EV_NEW_PROC, EV_EXEC, EV_EXIT, EV_CPU_SAMPLE, EV_OFFCPU_SAMPLE = 1, 2, 3, 4, 5
KIND_NAMES = {EV_CPU_SAMPLE: "cpu", EV_OFFCPU_SAMPLE: "off_cpu"}


class EventReader:
    def __init__(self, bpf: Any, *, on_new_process: Callable[[int], None],
                 on_exec: Callable[[int], None], on_exit: Callable[[int], None],
                 on_error: Callable[[BaseException], None]) -> None:
        self._bpf = bpf
        self._on_new = on_new_process
        self._on_exec = on_exec
        self._on_exit = on_exit
        self._on_error = on_error
        self._lock = threading.Lock()
        self._turn = threading.Condition()      # guards _draining
        self._draining = 0                      # drain() calls waiting for _lock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ebpf-events", daemon=True)
        # unix ns = monotonic ns + offset (bpf_ktime_get_ns is CLOCK_MONOTONIC)
        self._mono_to_unix = time.time_ns() - time.monotonic_ns()
        # (profile type, count_seq) -> key -> timestamps
        self._stamps: dict[tuple[str, int], dict[RawKey, list[int]]] = defaultdict(
            lambda: defaultdict(list))
        self._stamps_lock = threading.Lock()
        bpf[b"events"].open_ring_buffer(self._handle)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._turn:                    # let a waiting drain() have the ring
                self._turn.wait_for(lambda: not self._draining or self._stop.is_set(), 0.5)
            try:
                with self._lock:
                    self._bpf.ring_buffer_poll(100)
                    # records submitted without a wake-up (user stack copies)
                    self._bpf.ring_buffer_consume()
            except Exception as exc:
                self._on_error(exc)
                self._stop.wait(0.5)

    def drain(self) -> None:
        with self._turn:
            self._draining += 1
        try:
            with self._lock:
                self._bpf.ring_buffer_consume()
        finally:
            with self._turn:
                self._draining -= 1
                self._turn.notify_all()

    def _handle(self, _ctx: object, data: int, _size: int) -> None:
        try:
            ev = ctypes.cast(data, ctypes.POINTER(CEvent)).contents
            kind = int(ev.kind)
            pid = int(ev.key.pid)
            if kind == EV_NEW_PROC:
                self._on_new(pid)
            elif kind == EV_EXEC:
                self._on_exec(pid)
            elif kind == EV_EXIT:
                self._on_exit(pid)
            elif kind in KIND_NAMES:
                key = raw_key(ev.key)
                with self._stamps_lock:
                    self._stamps[(KIND_NAMES[kind], int(ev.count_seq))][key].append(
                        int(ev.ts) + self._mono_to_unix)
        except Exception as exc:   # a callback must never raise into the ring reader
            self._on_error(exc)

    def take_timestamps(self, kind: str, seq: int) -> dict[RawKey, list[int]]:
        with self._stamps_lock:
            return self._stamps.pop((kind, seq & 0xFFFFFFFF), {})

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

