"""TensorBoard event files, written without TensorBoard: scalars only, in the format its reader reads.

An event file is a sequence of TFRecords (uint64 length, masked CRC-32C of the length, the bytes, masked
CRC-32C of the bytes), each an `Event` protobuf: wall_time (1, double), step (2, int64), file_version
(3, string) for the first record, summary (5) with `Value`s of tag (1) and simple_value (2, float).
Those few fields are encoded here by hand, so every cell logs its curves by default without the
tensorboard package (viewing them needs it: `tensorboard --logdir SWEEP_DIR`). tests/sweep/
test_tracking.py reads the files back with TensorBoard's own EventAccumulator.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1  # int64 as protobuf writes negatives
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes(number: int, data: bytes) -> bytes:
    return _field(number, 2) + _varint(len(data)) + data


def event(
    wall_time: float, step: int, scalars: dict[str, float] | None = None, file_version: str = ""
) -> bytes:
    """One serialized `Event`."""
    out = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step)
    if file_version:
        out += _bytes(3, file_version.encode())
    if scalars:
        values = b"".join(
            _bytes(1, _bytes(1, tag.encode()) + _field(2, 5) + struct.pack("<f", float(v)))
            for tag, v in scalars.items()
        )
        out += _bytes(5, values)
    return out


def record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


class EventFile:
    """An append-only events file in `folder` (one per process that writes there, as TensorBoard's
    writers do: a resumed run adds a file, and TensorBoard reads them all)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.tunewise"
        self.path = folder / name
        self._f = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self._f.write(record(event(time.time(), 0, file_version="brain.Event:2")))
        self._f.flush()

    def scalars(self, step: int, values: dict[str, float], wall_time: float | None = None) -> None:
        clean = {k: v for k, v in values.items() if v is not None}
        if clean:
            self._f.write(record(event(time.time() if wall_time is None else wall_time, step, clean)))

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            self._f.close()
