"""BPF_MAP_TYPE_RINGBUF consumed through mmap, as libbpf does (kernel >= 5.8).

The map's first page is the consumer position (read-write); from the next
page on: the producer position page, then the data area, which the kernel
lets user space map twice in a row so that a record that wraps is
contiguous. libbpf maps both copies; every page of them is counted in the
agent's RSS (the kernel inserts them all at mmap), so here only the data
area and its first ``tail`` bytes again are mapped (4 MiB + 32 KiB for the
stack-copy ring instead of 8 MiB): a record that wraps by at most ``tail``
is contiguous, a longer one (none of telegen's programs write one) is
copied. Each record is an 8-byte header (``len`` with BUSY/DISCARD bits,
page offset) followed by the data, rounded up to 8 bytes. Callbacks get
``(ctx, address, size)`` like BCC's, valid only during the call. x86-64
keeps loads and stores in order; the position reads/writes here are plain
word accesses.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import threading
from collections.abc import Callable

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR_SIZE = 8

RingCallback = Callable[[object, int, int], object]

# the longest record any telegen program writes: a stack copy (bpf/telegen.h,
# struct ustack_rec: 16 KiB of stack and its header), rounded up to pages
TAIL_BYTES = 32 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FAILED = ctypes.c_void_p(-1).value


def _mmap(size: int, prot: int, fd: int, offset: int) -> int:
    p = _libc.mmap(None, size, prot, mmap.MAP_SHARED, fd, offset)
    if p is None or p == MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap of ring buffer: {os.strerror(err)}")
    return int(p)


class RingBuffer:
    def __init__(self, fd: int, data_size: int, callback: RingCallback,
                 tail: int = TAIL_BYTES) -> None:
        if data_size <= 0 or data_size & (data_size - 1):
            raise ValueError(f"ring buffer size {data_size} is not a power of two")
        self.fd = fd
        self._cb = callback
        self._page = mmap.PAGESIZE
        self._size = data_size
        self._mask = data_size - 1
        self._tail = min(-(-tail // self._page) * self._page, data_size)
        self._copy = ctypes.create_string_buffer(0)     # a record that wraps further
        self._cons = _mmap(self._page, mmap.PROT_READ | mmap.PROT_WRITE, fd, 0)
        self._prod_len = self._page + data_size + self._tail
        try:
            self._prod = _mmap(self._prod_len, mmap.PROT_READ, fd, self._page)
        except OSError:
            _libc.munmap(self._cons, self._page)
            raise
        self._data = self._prod + self._page
        self._cons_pos = ctypes.c_ulong.from_address(self._cons)
        self._prod_pos = ctypes.c_ulong.from_address(self._prod)

    def consume(self) -> int:
        """Hand every committed record to the callback; returns how many."""
        n = 0
        cons = self._cons_pos.value
        while True:
            prod = self._prod_pos.value
            progressed = False
            while cons < prod:
                at = self._data + (cons & self._mask)
                length = ctypes.c_uint32.from_address(at).value
                if length & BUSY_BIT:             # reserved, not yet committed
                    return n
                size = length & ~(BUSY_BIT | DISCARD_BIT)
                progressed = True
                try:
                    if not length & DISCARD_BIT:
                        n += 1
                        self._cb(None, self._contiguous(at + HDR_SIZE, size), size)
                finally:                          # a raising callback does not replay it
                    cons += (size + HDR_SIZE + 7) & ~7
                    self._cons_pos.value = cons   # the kernel may reuse the space now
            if not progressed:
                return n

    def _contiguous(self, addr: int, size: int) -> int:
        """The record's data at one address: in the mapping, or copied if it
        wraps past the ``tail`` mapped twice."""
        if addr + size <= self._data + self._size + self._tail:
            return addr
        first = self._data + self._size - addr    # bytes before the wrap
        if first <= 0:                            # the header wrapped: data at the start
            return addr - self._size
        if len(self._copy) < size:
            self._copy = ctypes.create_string_buffer(size)
        dst = ctypes.addressof(self._copy)
        ctypes.memmove(dst, addr, first)
        ctypes.memmove(dst + first, self._data, size - first)
        return dst

    def close(self) -> None:
        if self._cons:
            _libc.munmap(self._prod, self._prod_len)
            _libc.munmap(self._cons, self._page)
            self._cons = self._prod = 0


class RingBuffers:
    """All opened rings of one BPF object, polled together (BCC's ring_buffer_poll)."""

    def __init__(self) -> None:
        self._rings: list[RingBuffer] = []
        self._epoll: select.epoll | None = None
        # close() must not unmap a ring another thread is reading
        self._lock = threading.Lock()

    def add(self, ring: RingBuffer) -> None:
        with self._lock:
            if self._epoll is None:
                self._epoll = select.epoll()
            self._epoll.register(ring.fd, select.EPOLLIN)
            self._rings.append(ring)

    def poll(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for data, then consume every ring."""
        epoll = self._epoll
        if epoll is None:
            return 0
        try:
            epoll.poll(timeout_ms / 1000.0)
        except ValueError:           # closed meanwhile
            return 0
        return self.consume()

    def consume(self) -> int:
        with self._lock:
            return sum(r.consume() for r in self._rings)

    def close(self) -> None:
        with self._lock:
            for r in self._rings:
                r.close()
            self._rings = []
            if self._epoll is not None:
                self._epoll.close()
                self._epoll = None
