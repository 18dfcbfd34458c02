"""A replay model of PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp, default
settings, one stream): what `max_memory_reserved` becomes for a sequence of allocations and frees.

`reserved − allocated` is fragmentation: freed blocks stay cached in their segments, a request is served
by the smallest cached block that fits (split when the rest is worth keeping), and a new segment is
`cudaMalloc`ed only when no cached block fits. Segments are never returned (no `empty_cache`, no OOM
retry), so `reserved` only grows. The rules modelled, with the allocator's constants:

- sizes round up to 512 B; requests ≤ 1 MiB use the small pool (2 MiB segments), larger ones the large
  pool: a 20 MiB segment for requests < 10 MiB, else the request rounded up to 2 MiB;
- best fit: the smallest free block of the pool with size ≥ the request (lowest address on ties);
  `max_split_size_mb` unset, so any block may be split;
- split when the remainder is ≥ 512 B (small pool) or > 1 MiB (large pool);
- a freed block merges with free neighbours of its segment.

Pure Python (no torch): the advisor and the benchmarks replay allocation sequences with it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20  # requests up to 1 MiB: small pool
SMALL_BUFFER = 2 << 20  # small-pool segment
LARGE_BUFFER = 20 << 20  # large-pool segment for requests under MIN_LARGE_ALLOC
MIN_LARGE_ALLOC = 10 << 20
ROUND_LARGE = 2 << 20


def round_size(n: int) -> int:
    return MIN_BLOCK if n < MIN_BLOCK else MIN_BLOCK * -(-n // MIN_BLOCK)


def segment_size(n: int) -> int:
    if n <= SMALL_SIZE:
        return SMALL_BUFFER
    if n < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * -(-n // ROUND_LARGE)


@dataclass(eq=False)
class _Block:
    addr: int
    size: int
    small: bool
    free: bool = True
    prev: _Block | None = None
    next: _Block | None = None


@dataclass
class Allocator:
    """Replay `malloc(key, nbytes)` / `free(key)`; read `allocated`, `reserved` and their peaks."""

    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    _pools: dict[bool, list] = field(default_factory=lambda: {True: [], False: []})  # (size, addr, blk)
    _live: dict[object, _Block] = field(default_factory=dict)
    _next_addr: int = 0

    def _insert(self, b: _Block) -> None:
        bisect.insort(self._pools[b.small], (b.size, b.addr, b))

    def _remove(self, b: _Block) -> None:
        pool = self._pools[b.small]
        i = bisect.bisect_left(pool, (b.size, b.addr))
        assert pool[i][2] is b
        del pool[i]

    def malloc(self, key: object, nbytes: int) -> None:
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        pool = self._pools[small]
        i = bisect.bisect_left(pool, (size, -1))
        if i < len(pool):
            b = pool.pop(i)[2]
        else:  # cudaMalloc a new segment
            seg = segment_size(size)
            b = _Block(self._next_addr, seg, small)
            self._next_addr += seg
            self.reserved += seg
            self.peak_reserved = max(self.peak_reserved, self.reserved)
        rest = b.size - size
        if (rest >= MIN_BLOCK) if small else (rest > SMALL_SIZE):  # worth keeping as a free block
            r = _Block(b.addr + size, rest, small, prev=b, next=b.next)
            if b.next is not None:
                b.next.prev = r
            b.next, b.size = r, size
            self._insert(r)
        b.free = False
        self._live[key] = b
        self.allocated += b.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def free(self, key: object) -> None:
        b = self._live.pop(key)
        self.allocated -= b.size
        b.free = True
        for nb in (b.prev, b.next):
            if nb is not None and nb.free:
                self._remove(nb)
                if nb is b.prev:  # absorb b into its predecessor
                    nb.size += b.size
                    nb.next = b.next
                    if b.next is not None:
                        b.next.prev = nb
                    b = nb
                else:
                    b.size += nb.size
                    b.next = nb.next
                    if nb.next is not None:
                        nb.next.prev = b
        self._insert(b)

    def replay(self, events) -> Allocator:
        """events: ("alloc", key, nbytes) | ("free", key)."""
        for e in events:
            if e[0] == "alloc":
                self.malloc(e[1], e[2])
            else:
                self.free(e[1])
        return self
