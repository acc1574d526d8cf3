"""A small incremental reader of TensorBoard event files (TFRecord framing), without TensorFlow.

A TFRecord is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``.
:class:`TFRecordTail` remembers its byte offset, leaves a partially written record for the next poll,
and on a bad checksum skips forward to the next valid record header with a warning instead of
failing. Records are ``tensorboard.compat.proto.event_pb2.Event`` messages, imported on first use
(the tensorboard package's protobufs cost ~40 ms; TensorFlow itself is never imported).
"""
from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = 12
FOOTER = 4
MAX_RECORD = 256 * 1024 * 1024
TRUNCATED_AFTER_S = 10.0  # a partial record this old is a truncated file, not a writer mid-flush


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclass
class Scalar:
    step: int
    tag: str
    value: float
    wall_time: float


@dataclass
class TFRecordTail:
    """Yields the payload of each new whole, valid record of one growing file."""

    path: Path
    offset: int = 0
    warnings: list[str] = field(default_factory=list)
    _warned_tail: bool = False

    def _warn(self, text: str) -> None:
        if len(self.warnings) < 100:
            self.warnings.append(f"{self.path}: {text}")

    def poll(self) -> Iterator[bytes]:
        try:
            st = self.path.stat()
            if st.st_size < self.offset:
                self.offset = 0  # replaced or truncated: start again
            if st.st_size == self.offset:
                return
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                buf = fh.read()
        except OSError as exc:
            self._warn(f"cannot read ({exc})")
            return
        pos = 0
        while len(buf) - pos >= HEADER:
            length_bytes = buf[pos:pos + 8]
            (length,) = struct.unpack("<Q", length_bytes)
            (len_crc,) = struct.unpack("<I", buf[pos + 8:pos + 12])
            if len_crc != masked_crc32c(length_bytes) or length > MAX_RECORD:
                skip = self._resync(buf, pos + 1)
                self._warn(f"corrupt record header at byte {self.offset + pos}; skipped {skip - pos} bytes")
                pos = skip
                continue
            end = pos + HEADER + length + FOOTER
            if end > len(buf):
                break  # the writer has not finished this record yet
            data = buf[pos + HEADER:pos + HEADER + length]
            (data_crc,) = struct.unpack("<I", buf[end - FOOTER:end])
            pos = end
            if data_crc != masked_crc32c(data):
                self._warn(f"record with a bad checksum at byte {self.offset + end - length - HEADER - FOOTER} skipped")
                continue
            yield data
        self.offset += pos
        if self.offset < st.st_size and not self._warned_tail and time.time() - st.st_mtime > TRUNCATED_AFTER_S:
            self._warned_tail = True
            self._warn(f"ends with {st.st_size - self.offset} bytes of a truncated record (ignored)")

    def _resync(self, buf: bytes, start: int) -> int:
        """The next offset where a valid record header starts (or the end of what is whole)."""
        for pos in range(start, len(buf) - HEADER + 1):
            length_bytes = buf[pos:pos + 8]
            if struct.unpack("<I", buf[pos + 8:pos + 12])[0] == masked_crc32c(length_bytes):
                return pos
        return max(start, len(buf) - HEADER + 1)


def event_pb2() -> Any:
    from tensorboard.compat.proto import event_pb2 as module

    return module


def scalars(payload: bytes, warnings: list[str], path: Path) -> list[Scalar]:
    """The scalar values of one serialized Event (simple_value or a 0-d float tensor)."""
    event = event_pb2().Event()
    try:
        event.ParseFromString(payload)
    except Exception as exc:  # protobuf DecodeError: a checksummed but unparsable record
        if len(warnings) < 100:
            warnings.append(f"{path}: unparsable event skipped ({type(exc).__name__})")
        return []
    if not event.HasField("summary"):
        return []
    out = []
    for value in event.summary.value:
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            number = float(value.simple_value)
        elif kind == "tensor" and value.tensor.float_val:
            number = float(value.tensor.float_val[0])
        elif kind == "tensor" and value.tensor.double_val:
            number = float(value.tensor.double_val[0])
        elif kind == "tensor" and len(value.tensor.tensor_content) in (4, 8) and value.tensor.dtype in (1, 2):
            number = struct.unpack("<f" if value.tensor.dtype == 1 else "<d", value.tensor.tensor_content)[0]
        else:
            continue
        out.append(Scalar(int(event.step), value.tag, number, float(event.wall_time)))
    return out
