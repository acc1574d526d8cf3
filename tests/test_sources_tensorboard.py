"""A TensorBoard log dir alone, written by a plain PyTorch loop (torch.utils.tensorboard), attached
live and after; compared against TensorBoard's own reader. Plus the TFRecord framing edge cases."""
from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners.watch.sources import detect_kind, open_source
from runners.watch.sources.tensorboard import TensorBoardSource
from runners.watch.sources.formats.tensorboard_dir import metric_name
from runners.watch.sources.formats.tfevents import TFRecordTail, masked_crc32c
from scripts.watch import SCRIPTS, close, merged, watch


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
            "from pathlib import Path\nfrom runners.watch.sources import tfevents\n"
            "assert tfevents.crc32c_c is None and tfevents.crc32c is tfevents.crc32c_py\n"
            "assert tfevents.use_c_crc32c(True) is False\n"
            f"print(list(tfevents.TFRecordTail(Path({str(path)!r})).poll()))")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[b'first', b'second']"
