"""telegen.bpf.ringbuf against a real BPF ring written by a real program.

The reader maps the data area once plus a ``tail`` (the kernel's second copy,
libbpf maps all of it): a record that wraps by at most ``tail`` is read in
place, a longer one is copied. A socket-filter program run with
BPF_PROG_TEST_RUN writes records of 1000, 3000 and 5000 bytes, each with its
sequence number at both ends, into a 16 KiB ring, so records wrap at many
offsets; every tail size must hand over the same records, whole."""

from __future__ import annotations

import ctypes
import struct

import pytest

from telegen.bpf import syscall as sc
from telegen.bpf.ringbuf import TAIL_BYTES, RingBuffer

PROG = r"""
BPF_RINGBUF_OUTPUT(rb, 4);                       /* 16 KiB */
struct rec { u64 words[5000 / 8]; };
BPF_PERCPU_ARRAY(scratch, struct rec, 1);
BPF_ARRAY(counter, u64, 1);

int emit(struct __sk_buff *skb) {
    int zero = 0;
    struct rec *r = scratch.lookup(&zero);
    u64 *ctr = counter.lookup(&zero);
    if (!r || !ctr)
        return 0;
    u64 seq = *ctr;
    *ctr = seq + 1;
    r->words[0] = seq;
    switch (seq % 3) {
    case 0: r->words[1000 / 8 - 1] = seq; rb.ringbuf_output(r, 1000, 0); break;
    case 1: r->words[3000 / 8 - 1] = seq; rb.ringbuf_output(r, 3000, 0); break;
    default: r->words[5000 / 8 - 1] = seq; rb.ringbuf_output(r, 5000, 0); break;
    }
    return 0;
}
"""
PROG_TEST_RUN = 10
SIZES = (1000, 3000, 5000)


def run_once(prog_fd: int, packet: ctypes.Array[ctypes.c_char]) -> None:
    """BPF_PROG_TEST_RUN once (union bpf_attr.test: prog_fd, retval,
    data_size_in, data_size_out, data_in, data_out, repeat, duration)."""
    attr = ctypes.create_string_buffer(sc._ATTR_SIZE)
    struct.pack_into("=IIIIQQII", attr, 0, prog_fd, 0, len(packet), 0,
                     ctypes.addressof(packet), 0, 1, 0)
    sc.bpf(PROG_TEST_RUN, attr)


@pytest.mark.parametrize("tail", [0, 4096, TAIL_BYTES])
def test_records_that_wrap_arrive_whole_whatever_is_mapped_twice(tail: int) -> None:
    from bcc import BPF
    b = BPF(text=PROG)
    try:
        fn = b.load_func(b"emit", BPF.SOCKET_FILTER)
        got: list[tuple[int, int, int]] = []
        copied = []

        def on_record(_ctx: object, addr: int, size: int) -> None:
            data = ctypes.string_at(addr, size)
            first, = struct.unpack_from("=Q", data, 0)
            last, = struct.unpack_from("=Q", data, size - 8)
            got.append((first, last, size))
            copied.append(addr == ctypes.addressof(ring._copy))

        ring = RingBuffer(b[b"rb"].map_fd, 4 * 4096, on_record, tail=tail)
        packet = ctypes.create_string_buffer(64)
        try:
            for _ in range(100):
                run_once(fn.fd, packet)
                run_once(fn.fd, packet)          # 2 records at most: 10 KiB < 16 KiB
                ring.consume()
        finally:
            ring.close()
        assert got == [(i, i, SIZES[i % 3]) for i in range(200)]
        if tail == 0:
            assert sum(copied) >= 20, sum(copied)     # ~ one in three wraps
        elif tail == 4096:
            assert 0 < sum(copied) < sum(not c for c in copied)
        else:
            assert not any(copied)                  # every record wraps by < 32 KiB
    finally:
        b.cleanup()


def test_the_mapping_counts_the_data_once() -> None:
    """RSS: the data area and the tail, not the data twice."""
    from bcc import BPF
    b = BPF(text=PROG.replace("rb, 4)", "rb, 256)"))       # 1 MiB
    try:
        ring = RingBuffer(b[b"rb"].map_fd, 256 * 4096, lambda *a: None)
        try:
            with open("/proc/self/smaps") as f:
                text = f.read()
            start = f"{ring._prod:x}-"
            block = text[text.index(start):].split("\n")
            field = {x.split(":")[0]: int(x.split()[1]) for x in block[1:20] if "kB" in x}
            assert field["Size"] * 1024 == 4096 + 256 * 4096 + TAIL_BYTES     # was 4096 + 2 MiB
            assert field["Rss"] <= field["Size"]
        finally:
            ring.close()
    finally:
        b.cleanup()
