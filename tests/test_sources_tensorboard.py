"""A TensorBoard log dir alone, written by a plain PyTorch loop (torch.utils.tensorboard), attached
live and after; compared against TensorBoard's own reader. Plus the TFRecord framing edge cases."""
from __future__ import annotations

import math
import os
import struct
import time
from pathlib import Path

import pytest
from scripts.watch import SCRIPTS, close, merged, watch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners.watch.sources import detect_kind, open_source
from runners.watch.sources.formats.tensorboard_dir import metric_name
from runners.watch.sources.formats.tfevents import TFRecordTail, masked_crc32c
from runners.watch.sources.tensorboard import TensorBoardSource


@pytest.fixture(scope="session")
def tb_run(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("tensorboard")
    logdir = work / "logs"
    watched = watch([str(SCRIPTS / "train_plain_tensorboard.py"), "--logdir", str(logdir), "--steps", "20",
                     "--step_delay", "0.2"], str(logdir), work)
    return logdir, watched


def reference(logdir: Path) -> dict[str, dict[int, float]]:
    """Every scalar as TensorBoard's own EventAccumulator reads it."""
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_every_scalar_comes_through(tb_run) -> None:
    logdir, watched = tb_run
    assert isinstance(watched.source, TensorBoardSource) and detect_kind(logdir) == "tensorboard"
    assert [r for r in watched.live if r["type"] == "log"], "nothing arrived while the loop ran"
    assert "running" in watched.live_states
    ref = reference(logdir)
    assert set(ref) == {"Loss/train", "lr", "Loss/val", "Accuracy/val"}
    logs, evals = merged(watched.records, "log"), merged(watched.records, "eval")
    for tag, points in ref.items():
        split, name = metric_name(tag)
        got = logs if split == "train" else evals
        for step, value in points.items():
            assert close(got[step][name], value), (tag, step)
    assert sorted(evals) == [5, 10, 15, 20] and set(evals[20]) == {"eval_Loss", "eval_Accuracy"}
    assert len(logs) == 20


def test_tag_names() -> None:
    assert metric_name("train/loss") == ("train", "loss")
    assert metric_name("eval/accuracy") == ("eval", "eval_accuracy")
    assert metric_name("Loss/val") == ("eval", "eval_Loss")
    assert metric_name("val_loss") == ("eval", "eval_loss")
    assert metric_name("test/f1") == ("test", "test_f1")
    assert metric_name("train/train_runtime") == ("train", "train_runtime")


def record(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc32c(length)) + payload + struct.pack("<I", masked_crc32c(payload))


def test_tfrecord_partial_corrupt_and_resync(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    one, two, three = record(b"first"), record(b"second"), record(b"third")
    path.write_bytes(one + two[:5])
    tail = TFRecordTail(path)
    assert list(tail.poll()) == [b"first"]  # half a record waits
    with path.open("ab") as fh:
        fh.write(two[5:])
    assert list(tail.poll()) == [b"second"]
    bad = bytearray(record(b"damaged"))
    bad[-6] ^= 0xFF  # payload byte: the data checksum fails
    with path.open("ab") as fh:
        fh.write(bytes(bad) + b"\x00garbage\x01" + three)
    assert list(tail.poll()) == [b"third"]
    assert any("bad checksum" in w for w in tail.warnings) and any("corrupt record header" in w for w in tail.warnings)


def test_truncated_event_file_in_a_log_dir(tb_run, tmp_path: Path) -> None:
    logdir, _ = tb_run
    event_file = next(logdir.glob("events.out.tfevents.*"))
    cut = tmp_path / "logs" / event_file.name
    cut.parent.mkdir()
    data = event_file.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    old = time.time() - 600
    os.utime(cut, (old, old))
    source = open_source(str(cut.parent))
    records = source.poll()
    assert 0 < len(merged(records, "log")) < 20
    assert any("truncated record" in w for w in source.warnings)
    assert source.status()["state"] == "unknown"  # no final record, nothing written lately


CRC32C_VECTORS = [  # RFC 3720 B.4 and the usual check value
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
]


@pytest.mark.parametrize("impl", ["c", "python"])
def test_crc32c_known_answers(impl: str) -> None:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tb_masked

    from runners.watch.sources.formats import tfevents

    crc = tfevents.crc32c_c if impl == "c" else tfevents.crc32c_py
    assert crc is not None, "google-crc32c's C implementation is a dependency"
    for data, value in CRC32C_VECTORS:
        assert crc(data) == value, data
    assert tfevents.mask(crc(b"123456789")) == 0xC78AB0E5 and tfevents.mask(crc(b"")) == 0xA282EAD8
    blob = os.urandom(4096)
    assert tfevents.mask(crc(blob)) == tb_masked(blob)  # TensorBoard's own (pure-Python) writer agrees


def test_c_checksum_is_the_default_and_switchable() -> None:
    from runners.watch.sources.formats import tfevents

    assert tfevents.crc32c is tfevents.crc32c_c
    try:
        assert tfevents.use_c_crc32c(False) is False and tfevents.crc32c is tfevents.crc32c_py
        assert tfevents.masked_crc32c(b"123456789") == 0xC78AB0E5
    finally:
        assert tfevents.use_c_crc32c(True) is True
    assert tfevents.masked_crc32c(b"123456789") == 0xC78AB0E5


def test_one_poll_reads_a_bounded_amount(tmp_path: Path) -> None:
    """A 20 MiB file: each poll reads at most 8 MiB of it, and the next poll carries on; nothing lost."""
    from runners.watch.sources.formats.tfevents import READ_PER_POLL

    path = tmp_path / "events.out.tfevents.1.host"
    payloads = [i.to_bytes(4, "little") + os.urandom(20_000) for i in range(1000)]
    path.write_bytes(b"".join(record(p) for p in payloads))
    size = path.stat().st_size
    assert READ_PER_POLL == 8 * 1024 * 1024 and size > 2 * READ_PER_POLL
    tail = TFRecordTail(path)
    got: list[bytes] = []
    offsets = []
    while True:
        before = tail.offset
        new = list(tail.poll())
        if not new:
            break
        assert tail.offset - before <= READ_PER_POLL
        offsets.append(tail.offset)
        got += new
    assert got == payloads and tail.offset == size and not tail.more
    assert len(offsets) == 3 and not tail.warnings  # 20 MiB in 8 MiB polls, no "truncated" warning midway


def test_a_record_bigger_than_one_poll_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    payloads = [b"a" * 5000, b"b" * 10, b"c" * 3000]
    path.write_bytes(b"".join(record(p) for p in payloads))
    tail = TFRecordTail(path, max_read=1024)
    assert list(tail.poll()) == [payloads[0]] and tail.more
    assert list(tail.poll()) == payloads[1:2] and tail.more
    assert list(tail.poll()) == payloads[2:] and not tail.more
    assert list(tail.poll()) == [] and not tail.warnings


def test_bounded_polls_keep_steps_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished SummaryWriter file read 300 bytes a poll: every step arrives whole, values as TensorBoard's."""
    from torch.utils.tensorboard import SummaryWriter

    from runners.watch.sources.formats import tfevents

    logdir = tmp_path / "logs"
    writer = SummaryWriter(str(logdir))
    for step in range(1, 41):
        writer.add_scalar("Loss/train", 1.0 / step, step)
        writer.add_scalar("lr", 0.001 * step, step)
        writer.add_scalar("grad_norm", 2.0 * step, step)
        if step % 10 == 0:
            writer.add_scalar("Loss/val", 0.5 / step, step)
    writer.close()
    old = time.time() - 600
    for f in logdir.glob("events.out.tfevents.*"):
        os.utime(f, (old, old))  # quiet long ago: the reader would flush a held step at once
    monkeypatch.setattr(tfevents, "READ_PER_POLL", 300)
    source = TensorBoardSource(logdir)
    polls, records = 0, []
    while True:
        polls += 1
        new = source.poll()
        records += new
        if not new and not source.has_unread:
            break
    assert polls > 10
    logs = [r for r in records if r["type"] == "log"]
    assert [r["step"] for r in logs] == list(range(1, 41))  # one record per step: none split at a poll boundary
    ref = reference(logdir)
    for r in logs:
        assert close(r["Loss"], ref["Loss/train"][r["step"]]) and close(r["lr"], ref["lr"][r["step"]])
        assert close(r["grad_norm"], ref["grad_norm"][r["step"]])
    assert sorted(merged(records, "eval")) == [10, 20, 30, 40]


def test_without_google_crc32c_the_pure_fallback_reads(tmp_path: Path) -> None:
    """A fresh interpreter where google_crc32c cannot be imported: the reader falls back and still reads."""
    import subprocess
    import sys

    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(record(b"first") + record(b"second"))
    code = ("import sys; sys.modules['google_crc32c'] = None\n"  # `import google_crc32c` now raises ImportError
            "from pathlib import Path\nfrom runners.watch.sources.formats import tfevents\n"
            "assert tfevents.crc32c_c is None and tfevents.crc32c is tfevents.crc32c_py\n"
            "assert tfevents.use_c_crc32c(True) is False\n"
            f"print(list(tfevents.TFRecordTail(Path({str(path)!r})).poll()))")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[b'first', b'second']"



# -- the wire-format reader against event_pb2 -----------------------------------------------------------

def scalar_key(found: list) -> list[tuple]:
    """Scalars comparable exactly: floats by their bits (0.0 and -0.0 differ), any NaN as NaN."""
    def bits(x: float) -> object:
        return "nan" if math.isnan(x) else struct.pack("<d", x)
    return [(s.step, type(s.step), s.tag, bits(s.value), bits(s.wall_time)) for s in found]


def both_decoders(payload: bytes) -> tuple[list | None, list | str, list[str]]:
    """(the wire reader's answer or None, event_pb2's scalars or its exception's name, its warnings)."""
    from runners.watch.sources.formats import tfevents

    warnings: list[str] = []
    try:
        reference = tfevents.scalars_pb2(payload, warnings, Path("x"))
    except Exception as exc:  # noqa: BLE001 - a tensor whose content does not fit its dtype raises
        return tfevents.wire_scalars(payload), type(exc).__name__, warnings
    return tfevents.wire_scalars(payload), reference, warnings


def assert_decoders_agree(payload: bytes) -> list | None:
    """scalars() (wire reader first) gives exactly what event_pb2 gives, warnings and exceptions too."""
    from runners.watch.sources.formats import tfevents

    wire, reference, ref_warnings = both_decoders(payload)
    warnings: list[str] = []
    if isinstance(reference, str):
        assert wire is None, payload
        with pytest.raises(Exception) as raised:
            tfevents.scalars(payload, warnings, Path("x"))
        assert type(raised.value).__name__ == reference
        return None
    if wire is not None:
        assert scalar_key(wire) == scalar_key(reference), payload
    assert scalar_key(tfevents.scalars(payload, warnings, Path("x"))) == scalar_key(reference), payload
    assert warnings == ref_warnings
    return wire


def payloads_of(logdir: Path) -> list[bytes]:
    out: list[bytes] = []
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        tail = TFRecordTail(path, max_read=1 << 30)
        out += list(tail.poll())
        assert not tail.warnings
    return out


def write_tensor_scalars(logdir: Path) -> None:
    """Scalars as tensors, the way TF2's tf.summary.scalar writes them (TensorBoard's own protos and
    writer, no TensorFlow): float and double 0-d tensors with the scalars plugin's metadata, a 1-element
    tensor with a shape, tensor_content of both widths, a half tensor (not read), negative and huge steps."""
    import numpy as np
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2
    from tensorboard.plugins.scalar import metadata
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    writer = EventFileWriter(str(logdir))
    meta = metadata.create_summary_metadata(display_name="Loss", description="training loss")
    tensors = [
        ("tf2/float", tensor_util.make_tensor_proto(np.float32(0.1))),
        ("tf2/double", tensor_util.make_tensor_proto(np.float64(0.1))),
        ("tf2/vector", tensor_util.make_tensor_proto(np.array([1.5], dtype=np.float32))),
        ("content/float", tensor_pb2.TensorProto(dtype=1, tensor_content=struct.pack("<f", -0.0))),
        ("content/double", tensor_pb2.TensorProto(dtype=2, tensor_content=struct.pack("<d", 1e300))),
        ("nan", tensor_util.make_tensor_proto(np.float32("nan"))),
    ]
    for step in (0, 1, 127, 128, 300, 2**31, -5, 2**62):
        values = [summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=meta) for tag, tensor in tensors]
        values.append(summary_pb2.Summary.Value(tag="simple/ünïcode", simple_value=float("inf")))
        writer.add_event(event_pb2.Event(step=step, wall_time=1.7e9 + step % 1000 / 7,
                                         summary=summary_pb2.Summary(value=values)))
        half = tensor_util.make_tensor_proto(np.float16(2.5))  # half_val: event_pb2 reads it (and finds no scalar)
        writer.add_event(event_pb2.Event(step=step, summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="tf2/half", tensor=half, metadata=meta)])))
    writer.close()


def test_wire_decoder_agrees_with_event_pb2_on_real_files(tmp_path: Path) -> None:
    """Event files as SummaryWriter, transformers' TensorBoardCallback and TF2-style tensor summaries
    write them: the wire reader decodes every scalar event itself, with exactly event_pb2's values."""
    from types import SimpleNamespace

    import numpy as np
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    torch_dir = tmp_path / "torch"
    writer = SummaryWriter(str(torch_dir))
    for step in range(1, 300, 7):
        writer.add_scalar("Loss/train", 1.0 / step, step)
        writer.add_scalar("new_style", 0.5 * step, step, new_style=True)
        writer.add_scalar("double", 1 / 3 * step, step, new_style=True, double_precision=True)
        writer.add_scalar("a" * 130, 2.0, step)  # a tag too long for the one-byte layout
        writer.add_histogram("weights", np.array([0.1, 0.2, 0.2, 0.9]), step)
        writer.add_text("note", f"step {step}", step)
    writer.add_scalars("run", {"a": 1.0, "b": 2.0}, 1)  # one file per key, in sub dirs
    writer.add_hparams({"lr": 0.1, "opt": "adam"}, {"hparam/accuracy": 0.5})
    writer.close()

    hf_dir = tmp_path / "hf"
    callback = TensorBoardCallback(tb_writer=SummaryWriter(str(hf_dir)))  # the Trainer's own callback
    args = SimpleNamespace(output_dir=str(tmp_path), to_json_string=lambda: '{"learning_rate": 0.001}')
    state = SimpleNamespace(is_world_process_zero=True, is_hyper_param_search=False, global_step=0)
    callback.on_train_begin(args, state, None)
    for step in range(1, 60):
        state.global_step = step
        callback.on_log(args, state, None, logs={"loss": 2.0 / step, "grad_norm": 1.5, "learning_rate": 1e-4,
                                                 "epoch": step / 60, "note": "a string goes to add_text"})
        if step % 20 == 0:
            callback.on_log(args, state, None, logs={"eval_loss": 1.0 / step, "eval_runtime": 0.5, "epoch": 1.0})
    callback.on_log(args, state, None, logs={"train_runtime": 12.5, "train_loss": 0.7, "total_flos": 1234.0})
    callback.on_train_end(args, state, None)

    tensor_dir = tmp_path / "tensors"
    write_tensor_scalars(tensor_dir)

    for logdir in (torch_dir, hf_dir, tensor_dir):
        payloads = payloads_of(logdir)
        scalar_events = 0
        for payload in payloads:
            wire, reference, _ = both_decoders(payload)
            if reference:
                scalar_events += 1
                assert wire is not None, f"{logdir.name}: a scalar event left to event_pb2: {payload[:80]!r}"
            assert_decoders_agree(payload)
        assert scalar_events >= (8 if logdir is tensor_dir else 100), logdir
    tags = {s.tag for p in payloads_of(hf_dir) for s in (both_decoders(p)[1] or [])}
    assert {"train/loss", "train/learning_rate", "eval/loss", "train/train_runtime"} <= tags
    tensor_tags = {s.tag for p in payloads_of(tensor_dir) for s in (both_decoders(p)[1] or [])}
    assert tensor_tags == {"tf2/float", "tf2/double", "tf2/vector", "content/float", "content/double", "nan",
                           "simple/ünïcode"}

    # end to end, the source gives the same records either way
    from runners.watch.sources.formats import tfevents

    try:
        for logdir in (torch_dir, hf_dir, tensor_dir):
            tfevents.use_wire_decoder(True)
            wire_records = TensorBoardSource(logdir).stream.poll(flush=True)
            tfevents.use_wire_decoder(False)
            pb2_records = TensorBoardSource(logdir).stream.poll(flush=True)
            assert wire_records and repr(wire_records) == repr(pb2_records)
    finally:
        tfevents.use_wire_decoder(True)


def field_tag(number: int, wire_type: int) -> int:
    return number << 3 | wire_type


def test_wire_decoder_field_numbers_match_the_protos() -> None:
    """The tag bytes the wire reader knows are those of tensorboard's .proto files (event_pb2's descriptors)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.proto.summary_pb2 import HistogramProto, SummaryMetadata
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto

    from runners.watch.sources.formats import event_wire

    wire = {1: 1, 2: 5, 3: 0, 4: 0, 5: 0, 8: 0, 9: 2, 11: 2, 12: 2, 13: 0, 14: 0}  # descriptor type -> wire type
    kind = {1: "d", 3: "v", 4: "v", 5: "v", 8: "v", 9: "s", 12: "b", 13: "v", 14: "v"}

    def tags(descriptor) -> dict[str, int]:  # type: ignore[no-untyped-def]
        return {f.name: field_tag(f.number, 2 if f.is_packed else wire[f.type]) for f in descriptor.fields}

    event = event_pb2.Event.DESCRIPTOR
    value = event.fields_by_name["summary"].message_type.fields_by_name["value"].message_type
    tensor = value.fields_by_name["tensor"].message_type
    ev, va, te = tags(event), tags(value), tags(tensor)
    assert (ev["wall_time"], ev["step"], ev["file_version"], ev["summary"], ev["source_metadata"]) == \
        (0x09, 0x10, 0x1A, 0x2A, 0x52)
    assert tags(event.fields_by_name["summary"].message_type) == {"value": 0x0A}
    assert (va["tag"], va["simple_value"], va["tensor"], va["metadata"], va["node_name"], va["histo"],
            va["obsolete_old_style_histogram"]) == (0x0A, 0x15, 0x42, 0x4A, 0x3A, 0x2A, 0x1A)
    assert (te["dtype"], te["tensor_shape"], te["version_number"], te["tensor_content"], te["float_val"],
            te["double_val"]) == (0x08, 0x12, 0x18, 0x22, 0x2A, 0x32)
    assert field_tag(5, 5) == 0x2D and field_tag(6, 1) == 0x31  # float_val / double_val unpacked

    def schema_of(descriptor) -> dict[int, object]:  # type: ignore[no-untyped-def]
        out: dict[int, object] = {}
        for f in descriptor.fields:
            if f.type == 11:
                out[field_tag(f.number, 2)] = schema_of(f.message_type)
            elif f.is_packed:
                out[field_tag(f.number, 2)] = "p8"
                out[field_tag(f.number, 1)] = "d"  # one unpacked element
            else:
                out[field_tag(f.number, wire[f.type])] = kind[f.type]
        return out

    assert event_wire._SUMMARY_METADATA == schema_of(SummaryMetadata.DESCRIPTOR)
    assert event_wire._TENSOR_SHAPE == schema_of(TensorShapeProto.DESCRIPTOR)
    assert event_wire._HISTOGRAM == schema_of(HistogramProto.DESCRIPTOR)
    assert event_wire._SOURCE_METADATA == schema_of(event.fields_by_name["source_metadata"].message_type)


def varint(n: int) -> bytes:
    n &= 2**64 - 1
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + varint(len(body)) + body


def simple(tag: bytes, value: bytes = struct.pack("<f", 0.5)) -> bytes:
    return field(0x0A, tag) + b"\x15" + value


def event(*values: bytes, step: bytes = b"\x10\x07", head: bytes = b"\x09" + struct.pack("<d", 1.5)) -> bytes:
    return head + step + field(0x2A, b"".join(field(0x0A, v) for v in values))


def tensor_value(tag: bytes, *tensor_fields: bytes) -> bytes:
    return field(0x0A, tag) + field(0x42, b"".join(tensor_fields))


MALFORMED = {  # checksummed records whose bytes are not what they seem: each decoder must treat them alike
    "empty": b"",
    "bad utf-8 tag": event(simple(b"lo\xffss")),
    "surrogate in tag": event(simple(b"\xed\xa0\x80")),
    "truncated value": event(simple(b"loss"))[:-2],
    "length past the end": b"\x09" + struct.pack("<d", 1.5) + b"\x10\x01\x2a\x30\x0a\x04",
    "field number 0": b"\x00\x01" + event(simple(b"loss")),
    "wrong wire type for simple_value": event(field(0x0A, b"loss") + b"\x10\x05"),
    "eleven-byte varint step": event(simple(b"loss"), step=b"\x10" + b"\xff" * 10 + b"\x01"),
    "ten-byte step": event(simple(b"loss"), step=b"\x10" + b"\xff" * 9 + b"\x7f"),
    "negative step": event(simple(b"loss"), step=b"\x10" + varint(-3)),
    "huge step bits": event(simple(b"loss"), step=b"\x10" + b"\xff" * 9 + b"\x02"),
    "step twice": event(simple(b"loss"), step=b"\x10\x01\x10\x02"),
    "wall time short": b"\x09\x00\x00",
    "summary twice (merged)": event(simple(b"a")) + field(0x2A, field(0x0A, simple(b"b"))),
    "file_version after summary": event(simple(b"a")) + field(0x1A, b"brain.Event:2"),
    "summary after file_version": field(0x1A, b"brain.Event:2") + event(simple(b"a")),
    "empty summary": b"\x10\x01\x2a\x00",
    "value without tag": event(b"\x15" + struct.pack("<f", 1.0)),
    "simple then tensor": event(simple(b"x") + field(0x42, b"\x08\x01" + field(0x2A, struct.pack("<f", 2.0)))),
    "tensor then simple": event(tensor_value(b"x", field(0x2A, struct.pack("<f", 2.0))) + b"\x15" + struct.pack("<f", 3.0)),
    "tensor, simple, tensor": event(tensor_value(b"x", field(0x2A, struct.pack("<f", 2.0))) + b"\x15" + struct.pack("<f", 3.0)
                                    + field(0x42, b"\x08\x01" + field(0x22, struct.pack("<f", 8.0)))),
    "float_val twice (the first counts)": event(tensor_value(b"x", field(0x2A, struct.pack("<f", 2.0)),
                                                             field(0x2A, struct.pack("<ff", 3.0, 4.0)))),
    "tensor twice (merged)": event(tensor_value(b"x", b"\x08\x01") + field(0x42, field(0x2A, struct.pack("<f", 4.0)))),
    "tensor, histogram, tensor": event(tensor_value(b"x", field(0x2A, struct.pack("<f", 4.0))) + field(0x2A, b"")
                                       + field(0x42, b"\x08\x02" + field(0x22, struct.pack("<d", 5.0)))),
    "packed floats of a bad length": event(tensor_value(b"x", field(0x2A, b"\x00\x00\x80"))),
    "unpacked float_val": event(tensor_value(b"x", b"\x2d" + struct.pack("<f", 6.0))),
    "empty packed float_val": event(tensor_value(b"x", field(0x2A, b""), b"\x08\x01", field(0x22, struct.pack("<f", 7.0)))),
    "dtype float, 8 content bytes": event(tensor_value(b"x", b"\x08\x01", field(0x22, struct.pack("<d", 1.0)))),
    "dtype double, 4 content bytes": event(tensor_value(b"x", b"\x08\x02", field(0x22, struct.pack("<f", 1.0)))),
    "dtype beyond int32": event(tensor_value(b"x", b"\x08" + varint(2**32 + 1), field(0x22, struct.pack("<f", 1.0)))),
    "negative dtype": event(tensor_value(b"x", b"\x08" + varint(-1), field(0x22, struct.pack("<f", 1.0)))),
    "string tensor": event(tensor_value(b"x", b"\x08\x07", field(0x42, b"text"))),
    "bad metadata": event(simple(b"x") + field(0x4A, b"\xff\xff")),
    "bad utf-8 plugin name": event(simple(b"x") + field(0x4A, field(0x0A, field(0x0A, b"sc\xffalars")))),
    "bad utf-8 node_name": event(simple(b"x") + field(0x3A, b"\xc3")),
    "histogram of a bad length": event(field(0x0A, b"h") + field(0x2A, field(0x32, b"\x00" * 7))),
    "unknown field in a value": event(simple(b"x") + b"\x58\x01"),
    "group wire type": event(simple(b"x")) + b"\x0b\x0c",
    "unknown event field": event(simple(b"x")) + b"\x38\x01",
    "nan and -0.0": event(simple(b"n", struct.pack("<f", float("nan"))), simple(b"z", struct.pack("<f", -0.0))),
    "signalling nan": event(simple(b"s", b"\x01\x00\x80\x7f")),
    "tag of 128 bytes": event(simple(b"t" * 128)),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_wire_decoder_agrees_with_event_pb2_on_odd_records(name: str) -> None:
    assert_decoders_agree(MALFORMED[name])


def test_wire_decoder_agrees_with_event_pb2_on_damaged_records(tmp_path: Path) -> None:
    """Real records with bytes flipped, cut, inserted: exactly event_pb2's scalars or its warning."""
    import random

    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for step in (1, 200, 40000):
        writer.add_scalar("train/loss", 0.25, step)
        writer.add_scalar("eval/loss", 0.5, step, new_style=True, double_precision=step > 100)
        writer.add_histogram("w", np.array([0.0, 1.0, 1.0]), step)
    writer.close()
    payloads = [p for p in payloads_of(tmp_path) if len(p) < 400] + list(MALFORMED.values())
    rng = random.Random(20261201)
    decoded = 0
    for _ in range(6000):
        data = bytearray(rng.choice(payloads))
        for _ in range(rng.randint(1, 3)):
            where = rng.randrange(len(data) + 1)
            action = rng.random()
            if action < 0.5 and where < len(data):
                data[where] = rng.choice([rng.randrange(256), data[where] ^ 1 << rng.randrange(8), 0x80, 0x00])
            elif action < 0.75:
                del data[where:where + rng.randint(1, 4)]
            else:
                data[where:where] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
        if assert_decoders_agree(bytes(data)):
            decoded += 1
    assert decoded > 300  # the wire reader answered itself for many of them, not only event_pb2


def test_an_unparsable_record_warns_once_and_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(record(event(simple(b"loss"))) + record(event(simple(b"lo\xffss"))) + record(b"\xff\xff\xff"))
    source = TensorBoardSource(tmp_path)
    records = source.stream.poll(flush=True)
    assert [r["loss"] for r in records if r["type"] == "log"] == [0.5]
    assert len([w for w in source.warnings if "unparsable event skipped (DecodeError)" in w]) == 2
