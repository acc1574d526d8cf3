"""Reading a 50 MiB TensorBoard event file end to end: checksums (google-crc32c's C code or pure Python) and
event decoding (ftui's wire-format reader or TensorBoard's event_pb2), against the old pure-Python baseline.

Writes two event files with the real ``torch.utils.tensorboard.SummaryWriter`` under bench/out/ (git-ignored,
kept for the next run): a ~50 MiB "mixed" one (per step four scalars, a 1,000-bucket weight histogram, an eval
scalar every 50 steps: a 50 MiB file is mostly histograms, images or text) and a ~50 MiB "scalars only" one,
what the HF Trainer writes (the hard case: hundreds of thousands of small events, so decoding them, not
checksums, dominates). To write faster, the writer's pure-Python checksum is swapped for the C one while
writing (same bytes). Then it reads each file with ftui's TensorBoard source (``TensorBoardSource.poll``
until nothing is left: TFRecord framing, both checksums of every record, event decoding, grouping by step,
8 MiB per poll) in four configurations, interleaved, in this one process: pure-Python checksum + event_pb2
(the baseline: no google-crc32c, every event through protobuf), C checksum + event_pb2 (before the wire
reader), C checksum + wire reader (the default now) and pure-Python checksum + wire reader (the fallback
now). It checks all give the same records, reports wall and CPU time (the machine is shared: CPU time is
the steadier figure) and writes bench/results/tensorboard_read.md.
Run: .venv/bin/python bench/tensorboard_read.py [MiB] [repeats]
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from runners.watch.sources.formats import tfevents  # noqa: E402
from runners.watch.sources.tensorboard import TensorBoardSource  # noqa: E402

OUT = HERE / "out" / "tensorboard_read"
RESULT = HERE / "results" / "tensorboard_read.md"
BUCKETS = 1000
CONFIGS = {  # name: (C checksum, wire-format reader, what it stands for)
    "baseline": (False, False, "pure-Python checksum + event_pb2 (baseline)"),
    "c+pb2": (True, False, "google-crc32c (C) + event_pb2"),
    "now": (True, True, "google-crc32c (C) + wire reader (**default now**)"),
    "py+wire": (False, True, "pure-Python checksum + wire reader (fallback now)"),
}


def write_events(logdir: Path, mib: float, histograms: bool) -> tuple[Path, int]:
    from tensorboard.summary.writer import record_writer
    from torch.utils.tensorboard import SummaryWriter

    target, step = int(mib * 1024 * 1024), 0
    done = logdir / "complete"
    if done.exists() and done.read_text() == f"{target}":
        path = next(logdir.glob("events.out.tfevents.*"))
        return path, sum(1 for r in read_all(logdir)[1] if r["type"] == "log")
    logdir.mkdir(parents=True, exist_ok=True)
    for stale in logdir.glob("events.out.tfevents.*"):
        stale.unlink()
    crc_c = tfevents.crc32c_c
    assert crc_c is not None
    pure = record_writer.masked_crc32c
    record_writer.masked_crc32c = lambda data: tfevents.mask(crc_c(data))
    writer = SummaryWriter(str(logdir))
    limits = [float(i) / 100 for i in range(1, BUCKETS + 1)]
    while True:
        step += 1
        writer.add_scalar("train/loss", 1.0 / step, step)
        writer.add_scalar("train/learning_rate", 1e-4 * (1 - step / 10**6), step)
        writer.add_scalar("train/grad_norm", 2.0 + (step % 7) / 10, step)
        writer.add_scalar("train/epoch", step / 1000, step)
        if step % 50 == 0:
            writer.add_scalar("eval/loss", 0.5 / step, step)
        if histograms:
            counts = [float((i * step) % 97) for i in range(BUCKETS)]
            writer.add_histogram_raw("weights/layer0", min=0.0, max=limits[-1], num=int(sum(counts)), sum=1.0,
                                     sum_squares=1.0, bucket_limits=limits, bucket_counts=counts, global_step=step)
        if step % 100 == 0:
            writer.flush()
            path = next(logdir.glob("events.out.tfevents.*"))
            if path.stat().st_size >= target:
                break
    writer.close()
    record_writer.masked_crc32c = pure
    old = time.time() - 3600
    os.utime(path, (old, old))  # a finished file: the reader flushes the last step at once
    done.write_text(f"{target}")
    return path, step


def read_all(logdir: Path) -> tuple[float, list[dict], int, float]:
    start, cpu = time.perf_counter(), time.process_time()
    source = TensorBoardSource(logdir)
    records: list[dict] = []
    polls = 0
    while True:
        polls += 1
        new = source.poll()
        records += new
        if not new and not source.has_unread:
            break
    return time.perf_counter() - start, records, polls, time.process_time() - cpu


def compare(name: str, logdir: Path, mib: float, histograms: bool, repeats: int) -> list[str]:
    t0 = time.perf_counter()
    path, steps = write_events(logdir, mib, histograms)
    size = path.stat().st_size
    print(f"{name}: {path} ({size / 2**20:.1f} MiB, {steps} steps), ready in {time.perf_counter() - t0:.1f} s", flush=True)
    wall: dict[str, list[float]] = {k: [] for k in CONFIGS}
    cpu: dict[str, list[float]] = {k: [] for k in CONFIGS}
    results: dict[str, list[dict[str, Any]]] = {}
    polls = 0
    try:
        for _ in range(repeats):
            for config, (c_crc, wire, _label) in CONFIGS.items():  # interleaved: load from other work hits all alike
                tfevents.use_c_crc32c(c_crc)
                tfevents.use_wire_decoder(wire)
                seconds, records, polls, cpu_s = read_all(logdir)
                wall[config].append(seconds)
                cpu[config].append(cpu_s)
                results[config] = [{k: v for k, v in r.items() if k != "t"} for r in records]
                print(f"  {config:>8}: {seconds:.2f} s wall, {cpu_s:.2f} s CPU ({len(records)} records, {polls} polls)",
                      flush=True)
    finally:
        tfevents.use_c_crc32c(True)
        tfevents.use_wire_decoder(True)
    assert all(results[k] == results["baseline"] for k in CONFIGS), "the configurations gave different records"
    assert sum(1 for r in results["now"] if r["type"] == "log") == steps
    data = path.read_bytes()
    tail = tfevents.TFRecordTail(path, max_read=len(data))
    events = sum(1 for _ in tail.poll())
    crc_c = min(_time_crc(tfevents.crc32c_c, data) for _ in range(3))
    crc_py = _time_crc(tfevents.crc32c_py, data)
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in CONFIGS}
    what = (f"{steps} steps, each 4 scalars and a {BUCKETS}-bucket histogram" if histograms else
            f"{steps} steps of 4 scalars") + f", an eval scalar every 50 steps: {events} events"
    lines = [
        f"## {name}: {size / 2**20:.1f} MiB ({what}; {polls} polls)",
        "",
        "| checksum + decoder | read, wall | read, CPU | runs, wall (s) | runs, CPU (s) |",
        "|---|---|---|---|---|",
    ]
    for config, (_c, _w, label) in CONFIGS.items():
        lines.append(f"| {label} | **{med[config][0]:.2f} s** | {med[config][1]:.2f} s | "
                     f"{', '.join(f'{t:.2f}' for t in wall[config])} | {', '.join(f'{t:.2f}' for t in cpu[config])} |")

    def ratio(a: str, b: str) -> str:
        return f"**{med[a][0] / med[b][0]:.1f}x** wall, **{med[a][1] / med[b][1]:.1f}x** CPU"

    return lines + [
        "",
        f"Speed-up end to end, baseline to now: {ratio('baseline', 'now')}; the wire reader alone (C checksum "
        f"both): {ratio('c+pb2', 'now')}; the C checksum alone (event_pb2 both): {ratio('baseline', 'c+pb2')}. "
        f"The checksum alone over the file: {crc_c * 1000:.2f} ms C, {crc_py:.2f} s pure Python "
        f"({crc_py / crc_c:.0f}x).",
        "",
    ]


def main() -> int:
    mib = float(sys.argv[1]) if len(sys.argv) > 1 else 50
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if tfevents.crc32c_c is None:
        print("google-crc32c's C implementation is not installed: nothing to compare", file=sys.stderr)
        return 1
    lines = [
        "# Reading a TensorBoard event file: checksums (C or pure Python) and decoders (wire reader or event_pb2)",
        "",
        f"Measured on the project's CPU-only machine ({os.cpu_count()} cores, shared with other work while measuring), "
        f"Python {platform.python_version()}, google-crc32c {version('google-crc32c')} "
        f"(implementation `{getattr(sys.modules.get('google_crc32c'), 'implementation', '?')}`). "
        "Regenerate with `.venv/bin/python bench/tensorboard_read.py`.",
        "",
        "Each file is written by `torch.utils.tensorboard.SummaryWriter` and read end to end by "
        f"`TensorBoardSource.poll()` until done (at most {tfevents.READ_PER_POLL // 2**20} MiB a poll): framing, both "
        f"checksums of every record, event decoding, grouping by step. Median of {repeats} runs, the four "
        "configurations interleaved in one process; all give the same records. The baseline is the pure-Python "
        "checksum with every event through event_pb2 (how a machine without google-crc32c read before the wire "
        "reader), run with today's framing and grouping code, which all four share.",
        "",
    ]
    lines += compare("mixed", OUT / "mixed", mib, True, repeats)
    lines += compare("scalars only", OUT / "scalars", mib, False, repeats)
    RESULT.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _time_crc(fn: Callable[[bytes], int] | None, data: bytes) -> float:
    assert fn is not None
    start = time.perf_counter()
    fn(data)
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
