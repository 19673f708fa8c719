"""Time-ordered unique ids for ``ce-id`` (UUIDv7, RFC 9562)."""

from __future__ import annotations

import os
import time

_last_ms = 0
_counter = 0
# Random bytes drawn from the OS a page at a time: one system call per 400 ids, not two per id.
_POOL_SIZE = 4000
_pool = b""
_taken = _POOL_SIZE


def _random_bits(count: int) -> int:
    global _pool, _taken
    if _taken + count > len(_pool):
        _pool, _taken = os.urandom(_POOL_SIZE), 0
    start = _taken
    _taken += count
    return int.from_bytes(_pool[start:_taken], "big")


def uuid7() -> str:
    """Return a new UUIDv7 string; ids made by one process are strictly increasing."""
    global _last_ms, _counter
    now_ms = time.time_ns() // 1_000_000
    if now_ms > _last_ms:
        _last_ms = now_ms
        # A random start leaves room to count up within the millisecond.
        _counter = _random_bits(2) & 0x7FF
    else:
        _counter += 1
        if _counter > 0xFFF:
            _last_ms += 1
            _counter = 0
    rand_b = _random_bits(8) & 0x3FFF_FFFF_FFFF_FFFF
    value = (_last_ms << 80) | (0x7 << 76) | (_counter << 64) | (0b10 << 62) | rand_b
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _forget_pool() -> None:
    global _pool, _taken
    _pool, _taken = b"", _POOL_SIZE


# A forked child must not reuse its parent's random bytes.
os.register_at_fork(after_in_child=_forget_pool)
