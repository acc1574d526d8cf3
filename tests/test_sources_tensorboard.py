"""A TensorBoard log dir alone, written by a plain PyTorch loop (torch.utils.tensorboard), attached
live and after; compared against TensorBoard's own reader. Plus the TFRecord framing edge cases."""
from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners.sources import detect_kind, open_source
from runners.sources.tensorboard import TensorBoardSource, metric_name
from runners.sources.tfevents import TFRecordTail, masked_crc32c
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
