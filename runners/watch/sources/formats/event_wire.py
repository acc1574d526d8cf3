"""The protobuf wire format of a TensorBoard Event, for the few fields ftui reads (step, wall time, tag, value).

runners/watch/sources/formats/tfevents.py frames the records and calls :func:`wire_scalars` (inlined there as
``_simple_scalar`` then ``_decode_event``) for each; whatever this reader is unsure of goes to event_pb2.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any


@dataclass
class Scalar:
    step: int
    tag: str
    value: float
    wall_time: float


# -- the protobuf wire format, for the few Event fields ftui reads ------------------------------------
#
# An event is a sequence of (tag byte, value) fields: tag = field number << 3 | wire type (0 varint,
# 1 fixed64, 2 length-delimited, 5 fixed32). wire_scalars() knows the fields of the messages scalar,
# histogram and hparams summaries are made of and checks what protobuf checks on them (bounds, varint length,
# UTF-8 of string fields, packed lengths); a field it does not know, or anything it is unsure of, makes
# it answer None and the event goes to event_pb2. Repeated occurrences follow protobuf's rules: the last
# scalar wins, messages merge, setting one member of a oneof clears the others. Field numbers and types
# are tensorboard/compat/proto's (event, summary, tensor, tensor_shape, histogram); a test checks them
# against event_pb2's descriptors.

_F32 = struct.Struct("<f").unpack_from
_F64 = struct.Struct("<d").unpack_from
_U64 = 2**64


class _Unusual(Exception):
    """Not an event the wire reader decodes itself: event_pb2 decides."""


def _varint(buf: bytes, pos: int, stop: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``pos``; the low 64 bits, as protobuf keeps them."""
    result = shift = 0
    while shift < 70:  # at most 10 bytes
        if pos >= stop:
            raise _Unusual
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & (_U64 - 1), pos
        shift += 7
    raise _Unusual


def _length(buf: bytes, pos: int, stop: int) -> tuple[int, int]:
    """(start, end) of the length-delimited value whose length varint is at ``pos``."""
    n = buf[pos] if pos < stop else 0x80
    if n < 0x80:
        pos += 1
    else:
        n, pos = _varint(buf, pos, stop)
    end = pos + n
    if end > stop:
        raise _Unusual
    return pos, end


# A schema: tag byte -> "v" varint, "d" fixed64, "s" string (UTF-8), "b" bytes, "p8" packed fixed64,
# or the schema of a sub-message. Messages read only to be skipped are checked against theirs.
_Schema = dict[int, Any]
_PLUGIN_DATA: _Schema = {0x0A: "s", 0x12: "b"}  # plugin_name, content
_SUMMARY_METADATA: _Schema = {0x0A: _PLUGIN_DATA, 0x12: "s", 0x1A: "s", 0x20: "v"}  # ..., data_class
_DIM: _Schema = {0x08: "v", 0x12: "s"}  # size, name
_TENSOR_SHAPE: _Schema = {0x12: _DIM, 0x18: "v"}  # dim, unknown_rank
_HISTOGRAM: _Schema = {0x09: "d", 0x11: "d", 0x19: "d", 0x21: "d", 0x29: "d",  # min, max, num, sum, sum_squares
                       0x32: "p8", 0x31: "d", 0x3A: "p8", 0x39: "d"}  # bucket_limit, bucket (packed or not)
_SOURCE_METADATA: _Schema = {0x0A: "s"}  # writer


def _check(buf: bytes, pos: int, stop: int, schema: _Schema) -> None:
    """Raise _Unusual unless buf[pos:stop] is a well-formed message of ``schema``."""
    while pos < stop:
        kind = schema.get(buf[pos])
        pos += 1
        if kind is None:
            raise _Unusual
        if kind == "v":
            pos = _varint(buf, pos, stop)[1]
        elif kind == "d":
            pos += 8
        else:
            start, end = _length(buf, pos, stop)
            if kind == "s":
                buf[start:end].decode("utf-8")
            elif kind == "p8":
                if (end - start) % 8:
                    raise _Unusual
            elif kind != "b":
                _check(buf, start, end, kind)
            pos = end
    if pos != stop:
        raise _Unusual


class _Tensor:
    """What :func:`scalars` reads of a TensorProto, merged over repeated occurrences as protobuf does."""

    __slots__ = ("dtype", "content", "first_float", "first_double")

    def __init__(self) -> None:
        self.dtype = 0
        self.content = b""
        self.first_float: float | None = None
        self.first_double: float | None = None

    def merge(self, buf: bytes, pos: int, stop: int) -> None:
        while pos < stop:
            tag = buf[pos]
            pos += 1
            if tag == 0x2A:  # float_val, packed
                start, end = _length(buf, pos, stop)
                if (end - start) % 4:
                    raise _Unusual
                if self.first_float is None and end > start:
                    self.first_float = _F32(buf, start)[0]
                pos = end
            elif tag == 0x08:  # dtype: an int32 enum
                value, pos = _varint(buf, pos, stop)
                if value > 0x7FFFFFFF:
                    raise _Unusual
                self.dtype = value
            elif tag == 0x32:  # double_val, packed
                start, end = _length(buf, pos, stop)
                if (end - start) % 8:
                    raise _Unusual
                if self.first_double is None and end > start:
                    self.first_double = _F64(buf, start)[0]
                pos = end
            elif tag == 0x22:  # tensor_content
                start, end = _length(buf, pos, stop)
                self.content = buf[start:end]
                pos = end
            elif tag == 0x12:  # tensor_shape
                start, end = _length(buf, pos, stop)
                _check(buf, start, end, _TENSOR_SHAPE)
                pos = end
            elif tag == 0x18:  # version_number
                pos = _varint(buf, pos, stop)[1]
            elif tag == 0x2D:  # float_val, one unpacked element
                if pos + 4 > stop:
                    raise _Unusual
                if self.first_float is None:
                    self.first_float = _F32(buf, pos)[0]
                pos += 4
            elif tag == 0x31:  # double_val, one unpacked element
                if pos + 8 > stop:
                    raise _Unusual
                if self.first_double is None:
                    self.first_double = _F64(buf, pos)[0]
                pos += 8
            else:  # string_val (text), int_val, half_val...: not a float scalar, or unusual
                raise _Unusual

    def number(self) -> float | None:
        if self.first_float is not None:
            return self.first_float
        if self.first_double is not None:
            return self.first_double
        if len(self.content) in (4, 8) and self.dtype in (1, 2):
            if len(self.content) != (4 if self.dtype == 1 else 8):
                raise _Unusual  # event_pb2's reading raises on it: let it
            return (_F32 if self.dtype == 1 else _F64)(self.content)[0]
        return None


def _value(buf: bytes, pos: int, stop: int, out: list[tuple[str, float]]) -> None:
    """One Summary.Value: appends (tag, number) when it holds a scalar."""
    tag = ""
    kind = 0  # the `value` oneof: 0 unset, 1 simple_value, 2 tensor, 3 a histogram
    number = 0.0
    tensor: _Tensor | None = None
    while pos < stop:
        field = buf[pos]
        pos += 1
        if field == 0x15:  # simple_value
            if pos + 4 > stop:
                raise _Unusual
            number = _F32(buf, pos)[0]
            pos += 4
            kind, tensor = 1, None
            continue
        if field & 7 != 2:
            raise _Unusual
        start, pos = _length(buf, pos, stop)
        if field == 0x0A:  # tag
            tag = buf[start:pos].decode("utf-8")
        elif field == 0x42:  # tensor
            if tensor is None:
                tensor = _Tensor()
            tensor.merge(buf, start, pos)
            kind = 2
        elif field == 0x4A:  # metadata
            _check(buf, start, pos, _SUMMARY_METADATA)
        elif field == 0x3A:  # node_name
            buf[start:pos].decode("utf-8")
        elif field == 0x2A:  # histo
            _check(buf, start, pos, _HISTOGRAM)
            kind, tensor = 3, None
        elif field == 0x1A:  # obsolete_old_style_histogram (bytes)
            kind, tensor = 3, None
        else:  # image, audio, or a field this reader does not know
            raise _Unusual
    if kind == 1:
        out.append((tag, number))
    elif kind == 2 and tensor is not None:
        found = tensor.number()
        if found is not None:
            out.append((tag, found))


def _decode_event(buf: bytes) -> list[Scalar]:
    stop = len(buf)
    pos = 0
    wall_time = 0.0
    step = 0
    values: list[tuple[str, float]] | None = None  # None: the event holds no summary
    while pos < stop:
        field = buf[pos]
        pos += 1
        if field == 0x09:  # wall_time
            if pos + 8 > stop:
                raise _Unusual
            wall_time = _F64(buf, pos)[0]
            pos += 8
        elif field == 0x10:  # step
            step = buf[pos] if pos < stop else 0x80
            if step < 0x80:
                pos += 1
            else:
                step, pos = _varint(buf, pos, stop)
                if step >= 2**63:
                    step -= _U64
        elif field == 0x2A:  # summary (merged with an earlier one, as protobuf does)
            start, pos = _length(buf, pos, stop)
            if values is None:
                values = []
            while start < pos:  # Summary: repeated Value value = 1
                if buf[start] != 0x0A:
                    raise _Unusual
                start, end = _length(buf, start + 1, pos)
                _value(buf, start, end, values)
                start = end
        elif field == 0x1A:  # file_version: the other member of the oneof, clears the summary
            start, pos = _length(buf, pos, stop)
            buf[start:pos].decode("utf-8")
            values = None
        elif field == 0x52:  # source_metadata
            start, pos = _length(buf, pos, stop)
            _check(buf, start, pos, _SOURCE_METADATA)
        else:  # graph_def, session_log, ...: unusual here
            raise _Unusual
    if not values:
        return []
    return [Scalar(step, tag, number, wall_time) for tag, number in values]


_SIMPLE_TAGS: dict[bytes, str] = {}  # ``2a L 0a L-2 0a L-9 tag 15`` (checked once) -> tag
_SIMPLE_TAGS_MAX = 4096


def _simple_tag(middle: bytes) -> str | None:
    """The tag of a simple-value Summary's bytes up to its float, if that is all they are."""
    size = len(middle) + 2  # the Summary: these bytes but the leading two, and the float's four
    if size >= 0x80 or size < 9 or middle[0] != 0x2A or middle[1] != size or middle[2] != 0x0A \
            or middle[3] != size - 2 or middle[4] != 0x0A or middle[5] != size - 9 or middle[-1] != 0x15:
        return None
    tag = middle[6:-1].decode("utf-8")
    if len(_SIMPLE_TAGS) >= _SIMPLE_TAGS_MAX:
        _SIMPLE_TAGS.clear()
    _SIMPLE_TAGS[middle] = tag
    return tag


def _simple_scalar(buf: bytes) -> list[Scalar] | None:
    """The layout SummaryWriter.add_scalar writes, matched in place; None for any other layout.

    ``09 wall_time(8) 10 step(varint) 2a L 0a L-2 0a L-9 tag 15 simple_value(4)``, L < 128: the bytes
    between the step and the value depend on the tag alone, so each tag's are checked once and looked up.
    """
    if buf[0] != 0x09 or buf[9] != 0x10:
        return None
    step = buf[10]
    pos = 11
    if step >= 0x80:  # up to 2**28 inline; larger steps take the general reader
        step &= 0x7F
        for shift in (7, 14, 21):
            byte = buf[pos]
            pos += 1
            step |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
        else:
            return None
    if len(buf) - pos > 0x7D + 4:  # a Summary of 128 bytes or more: not this layout (and not worth hashing)
        return None
    middle = buf[pos:-4]
    tag = _SIMPLE_TAGS.get(middle) or _simple_tag(middle)
    if tag is None:
        return None
    return [Scalar(step, tag, _F32(buf, len(buf) - 4)[0], _F64(buf, 1)[0])]


def wire_scalars(payload: bytes) -> list[Scalar] | None:
    """:func:`scalars` of a usual event, read from the wire format; None when event_pb2 must decide."""
    try:
        return _simple_scalar(payload) or _decode_event(payload)
    except Exception:  # noqa: BLE001 - _Unusual, or a malformed record: event_pb2 reads it and warns
        return None
