"""events.jsonl: writer from several processes, tail reader with partial and corrupt lines."""
from __future__ import annotations

import json
import math
import multiprocessing as mp
from pathlib import Path

from runners import events as ev


def _write_many(path: str, rank: int, n: int) -> None:
    with ev.EventWriter(path, rank=rank) as writer:
        for i in range(n):
            writer.emit(ev.MEMORY, rank=rank, step=i, rss=123456789, note="x" * 200)


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    procs = [mp.get_context("spawn").Process(target=_write_many, args=(str(path), r, 300)) for r in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    records = ev.read_all(path)
    assert len(records) == 900
    assert sorted({r["rank"] for r in records}) == [0, 1, 2]
    for rank in range(3):
        assert [r["step"] for r in records if r["rank"] == rank] == list(range(300))


def test_tail_reader_keeps_partial_line_for_next_poll(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    reader = ev.TailReader(path)
    assert reader.poll() == []  # missing file is fine
    line = json.dumps(ev.make_record(ev.LOG, step=1, loss=0.5)) + "\n"
    path.write_text(line + line[:10])
    first = reader.poll()
    assert [r["step"] for r in first] == [1]
    with path.open("a") as fh:
        fh.write(line[10:])
    second = reader.poll()
    assert [r["step"] for r in second] == [1]
    assert reader.poll() == []


def test_tail_reader_skips_corrupt_lines_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = json.dumps(ev.make_record(ev.LOG, step=2, loss=0.25))
    path.write_text("\n".join(["{not json", good, "[1, 2]", '{"no_type": 1}', good]) + "\n")
    reader = ev.TailReader(path)
    records = reader.poll()
    assert [r["step"] for r in records] == [2, 2]
    assert reader.skipped == 3
    assert len(reader.warnings) == 3 and "corrupt" in reader.warnings[0]


def test_non_finite_floats_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with ev.EventWriter(path) as writer:
        writer.emit(ev.LOG, step=1, loss=float("nan"), grad_norm=float("inf"))
    (record,) = ev.read_all(path)
    assert math.isnan(record["loss"]) and record["grad_norm"] == float("inf")
    assert "NaN" not in path.read_text()  # strict JSON on disk


def test_truncated_file_restarts_from_zero(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with ev.EventWriter(path) as writer:
        for i in range(5):
            writer.emit(ev.LOG, step=i, loss=1.0)
    reader = ev.TailReader(path)
    assert len(reader.poll()) == 5
    with ev.EventWriter(tmp_path / "new.jsonl") as writer:
        writer.emit(ev.LOG, step=9, loss=1.0)
    (tmp_path / "new.jsonl").replace(path)
    assert [r["step"] for r in reader.poll()] == [9]


def test_read_all_reads_a_file_longer_than_one_poll(tmp_path: Path) -> None:
    """Regression: read_all used to stop after the first 4 MiB, so a long stopped run read as finished."""
    from runners import rundir
    from runners.launch import supervise
    from runners.watch.history import RunHistory

    run = rundir.create_run_dir(tmp_path / "runs", "long")
    path = run / ev.EVENTS_FILE
    with ev.EventWriter(path) as writer:
        writer.emit(ev.START, total_steps=100_000, world_size=1)
        step = 0
        while path.stat().st_size < 5 * 2**20 + 1000:
            step += 1
            writer.emit(ev.LOG, step=step, epoch=step / 100_000, loss=0.5, learning_rate=1e-4, note="x" * 100)
        writer.emit(ev.STOP, step=step, reason="user request")
        writer.emit(ev.FINISH, step=step, metrics={"train_loss": 0.5}, stopped=True)
    assert path.stat().st_size > 5 * 2**20
    records = ev.read_all(path)
    assert len(records) == step + 3 and records[-2]["type"] == ev.STOP and records[-1]["step"] == step
    assert ev.final_record(path)["stopped"] is True
    assert supervise.final_state(run, 0) == "stopped"
    chunks = list(ev.iter_chunks(path, chunk_bytes=2**20))
    assert len(chunks) >= 5 and sum(map(len, chunks)) == step + 3
    # ftui runs: the step of the whole file, not of its first 4 MiB
    rundir.update_status(run, state="stopped", started_at=1.0, ended_at=2.0)
    import contextlib
    import io

    from tui.commands.run import list_runs

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        list_runs(tmp_path / "runs", as_json=True)
    (row,) = json.loads(out.getvalue())
    assert row["step"] == step and row["state"] == "stopped"
    history = RunHistory()
    for chunk in ev.iter_chunks(path):
        history.apply(chunk)
    assert history.state == "stopped" and history.step == step
