"""A small incremental reader of TensorBoard event files (TFRecord framing), without TensorFlow.

A TFRecord is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``.
:class:`TFRecordTail` remembers its byte offset, leaves a partially written record for the next poll,
and on a bad checksum skips forward to the next valid record header with a warning instead of
failing. One poll reads at most :data:`READ_PER_POLL` bytes (more only to finish one big record) and
carries on from there on the next poll, so a large existing file never stalls the UI. Records are
``tensorboard.compat.proto.event_pb2.Event`` messages. The usual ones (scalars as SummaryWriter and the
HF Trainer write them, scalar tensors, histograms) are read by a small protobuf wire-format reader that
decodes only step, wall time, tag and value; anything else, malformed records included, goes to
event_pb2, imported on first use (the tensorboard package's protobufs cost ~40 ms; TensorFlow itself is
never imported). Both give exactly the same scalars and warnings (tests/test_sources_tensorboard.py).

Checksums use google-crc32c's C implementation when it is installed, else the pure-Python table below,
which gives the same values. ``bench/tensorboard_read.py`` measures both, and both decoders, end to end
on 50 MiB files (bench/results/tensorboard_read.md).
"""
from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.watch.sources.formats.event_wire import Scalar, _decode_event, _simple_scalar
from runners.watch.sources.formats.event_wire import wire_scalars as wire_scalars  # tests and benches call it here

HEADER = 12
FOOTER = 4
MAX_RECORD = 256 * 1024 * 1024
_HEAD = struct.Struct("<QI")  # length, masked crc of the length
_CRC = struct.Struct("<I")
TRUNCATED_AFTER_S = 10.0  # a partial record this old is a truncated file, not a writer mid-flush
READ_PER_POLL = 8 * 1024 * 1024  # bytes one poll reads; the rest waits for the next poll


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c_py(data: bytes) -> int:
    """CRC-32C (Castagnoli), pure Python: the fallback when google-crc32c's C code is not installed."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # google-crc32c falls back to its own pure-Python code without its extension: use it only as C
    import google_crc32c as _google_crc32c

    crc32c_c = _google_crc32c.value if getattr(_google_crc32c, "implementation", None) == "c" else None
except ImportError:
    crc32c_c = None

crc32c = crc32c_c or crc32c_py


def use_c_crc32c(enabled: bool = True) -> bool:
    """Choose the C (when installed) or the pure-Python checksum; returns whether C is now in use."""
    global crc32c
    crc32c = crc32c_c if enabled and crc32c_c else crc32c_py
    return crc32c is crc32c_c


def mask(crc: int) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add a constant."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF  # mask(), inlined: called twice per record


@dataclass
class TFRecordTail:
    """Yields the payload of each new whole, valid record of one growing file."""

    path: Path
    offset: int = 0
    warnings: list[str] = field(default_factory=list)
    max_read: int = field(default_factory=lambda: READ_PER_POLL)
    more: bool = False  # the last poll stopped at max_read: whole records are waiting for the next poll
    _warned_tail: bool = False

    def _warn(self, text: str) -> None:
        if len(self.warnings) < 100:
            self.warnings.append(f"{self.path}: {text}")

    def poll(self) -> Iterator[bytes]:
        try:
            st = self.path.stat()
            if st.st_size < self.offset:
                self.offset = 0  # replaced or truncated: start again
            self.more = False
            if st.st_size == self.offset:
                return
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                buf = fh.read(self.max_read)
        except OSError as exc:
            self._warn(f"cannot read ({exc})")
            return
        size = len(buf)
        to_eof = self.offset + size >= st.st_size
        pos = 0
        crc, head, tail = crc32c, _HEAD.unpack_from, _CRC.unpack_from  # locals: this loop runs once per record
        while size - pos >= HEADER:
            length, len_crc = head(buf, pos)
            c = crc(buf[pos:pos + 8])
            if len_crc != (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF or length > MAX_RECORD:  # mask()
                skip = self._resync(buf, pos + 1)
                self._warn(f"corrupt record header at byte {self.offset + pos}; skipped {skip - pos} bytes")
                pos = skip
                continue
            end = pos + HEADER + length + FOOTER
            if end > size and pos == 0 and not to_eof:  # one record bigger than max_read: read all of it
                try:
                    with self.path.open("rb") as fh:
                        fh.seek(self.offset)
                        buf = fh.read(end)
                except OSError as exc:
                    self._warn(f"cannot read ({exc})")
                    return
                size = len(buf)
                to_eof = self.offset + size >= st.st_size
            if end > size:
                break  # the writer has not finished this record yet, or the rest is for the next poll
            data = buf[pos + HEADER:end - FOOTER]
            (data_crc,) = tail(buf, end - FOOTER)
            pos = end
            c = crc(data)
            if data_crc != (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF:
                self._warn(f"record with a bad checksum at byte {self.offset + end - length - HEADER - FOOTER} skipped")
                continue
            yield data
        self.offset += pos
        if not to_eof:
            self.more = True
        elif self.offset < st.st_size and not self._warned_tail and time.time() - st.st_mtime > TRUNCATED_AFTER_S:
            self._warned_tail = True
            self._warn(f"ends with {st.st_size - self.offset} bytes of a truncated record (ignored)")

    def _resync(self, buf: bytes, start: int) -> int:
        """The next offset where a valid record header starts (or the end of what is whole)."""
        for pos in range(start, len(buf) - HEADER + 1):
            length_bytes = buf[pos:pos + 8]
            if struct.unpack("<I", buf[pos + 8:pos + 12])[0] == masked_crc32c(length_bytes):
                return pos
        return max(start, len(buf) - HEADER + 1)


_event_pb2: Any = None


def event_pb2() -> Any:
    global _event_pb2
    if _event_pb2 is None:
        from tensorboard.compat.proto import event_pb2 as module

        _event_pb2 = module
    return _event_pb2


def scalars(payload: bytes, warnings: list[str], path: Path) -> list[Scalar]:
    """The scalar values of one serialized Event (simple_value or a 0-d float tensor).

    The wire-format reader below decodes the usual events; anything else (and every malformed record)
    goes to event_pb2, so both give the same values and the same warnings.
    """
    if _use_wire:
        try:  # wire_scalars(), inlined: this runs once per event
            found = _simple_scalar(payload) or _decode_event(payload)
        except Exception:  # noqa: BLE001 - _Unusual, or a malformed record: event_pb2 reads it and warns
            found = None
        if found is not None:
            return found
    return scalars_pb2(payload, warnings, path)


def scalars_pb2(payload: bytes, warnings: list[str], path: Path) -> list[Scalar]:
    """:func:`scalars` through TensorBoard's protobufs: the reference, and the path for unusual events."""
    event = (_event_pb2 or event_pb2()).Event()
    try:
        event.ParseFromString(payload)
    except Exception as exc:  # protobuf DecodeError: a checksummed but unparsable record
        if len(warnings) < 100:
            warnings.append(f"{path}: unparsable event skipped ({type(exc).__name__})")
        return []
    if not event.HasField("summary"):
        return []
    out = []
    step, wall_time = int(event.step), float(event.wall_time)
    for value in event.summary.value:
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            number = float(value.simple_value)
        elif kind == "tensor" and value.tensor.float_val:
            number = float(value.tensor.float_val[0])
        elif kind == "tensor" and value.tensor.double_val:
            number = float(value.tensor.double_val[0])
        elif kind == "tensor" and (value.tensor.dtype, len(value.tensor.tensor_content)) in ((1, 4), (2, 8)):
            number = struct.unpack("<f" if value.tensor.dtype == 1 else "<d", value.tensor.tensor_content)[0]
        else:
            continue
        out.append(Scalar(step, value.tag, number, wall_time))
    return out


_use_wire = True


def use_wire_decoder(enabled: bool = True) -> bool:
    """Decode usual events with the wire-format reader (default), or every event with event_pb2."""
    global _use_wire
    _use_wire = enabled
    return _use_wire
