"""Slurm's answers as every stage reads them: a job's queue state from ``squeue``, from ``sacct`` once it has
left the queue, and ``scontrol show job``'s fields.

Every command is bounded (``TIMEOUT``) and "no Slurm here" is a normal answer: a missing program, a
controller that does not answer, a job it does not know all give None, never an exception. The runs list
and the monitor read a queued run's state every few seconds, so answers are kept for ``CACHE_SECONDS``.
Submitting and cancelling are runners/launch/slurm.py's; listing a user's jobs is runners/watch/slurm.py's.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

OUTPUT = "slurm-%j.out"  # a run's sbatch --output (in its run dir): the batch shell and srun; the ranks write stdout.log
TIMEOUT = 10.0  # seconds a Slurm command may take (a busy controller answers in well under that)
CACHE_SECONDS = 3.0
# squeue -o: job id, state, reason, node count, node list, name, user, work dir, start time, time used, time limit,
# partition, command (the batch script's path)
SQUEUE_FIELDS = ("job_id", "state", "reason", "nodes", "nodelist", "name", "user", "work_dir", "start", "elapsed",
                 "time_limit", "partition", "command")
SQUEUE_FORMAT = "%i|%T|%r|%D|%N|%j|%u|%Z|%S|%M|%l|%P|%o"
SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "Reason", "NNodes", "NodeList", "Start", "End", "Elapsed",
                "WorkDir")

QUEUED = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING")
ACTIVE = ("RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING", "SPECIAL_EXIT")
ENDED = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
         "OUT_OF_MEMORY", "REVOKED")
EMPTY = ("", "None", "(null)", "N/A", "Unknown", "None assigned")


@dataclass(frozen=True)
class JobState:
    """One job as Slurm tells it. ``state`` is Slurm's name (PENDING, RUNNING, COMPLETED, CANCELLED, ...);
    ``reason`` why it waits (Priority, Resources, Dependency, ...) or why it ended, None when Slurm says None."""

    job_id: str
    state: str
    reason: str | None = None
    nodes: int | None = None
    nodelist: str | None = None
    name: str | None = None
    exit_code: str | None = None  # "code:signal", sacct only
    work_dir: str | None = None
    source: str = "squeue"  # or sacct

    @property
    def phase(self) -> str:
        """queued, running or ended (an unknown state counts as running: it is still in the queue)."""
        if self.state in QUEUED:
            return "queued"
        return "ended" if self.state in ENDED else "running"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "phase": self.phase}


def _value(text: str) -> str | None:
    text = text.strip()
    return None if text in EMPTY else text


def _int(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def command(args: list[str], timeout: float = TIMEOUT) -> str | None:
    """The stdout of a Slurm client command, or None: not installed, no answer in time, or an error."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def available() -> bool:
    """Whether Slurm's client commands are on PATH (not whether a controller answers)."""
    return shutil.which("squeue") is not None


def parse_squeue(text: str) -> dict[str, dict[str, str | None]]:
    """``squeue -h -o SQUEUE_FORMAT`` lines, by job id: every field, None where Slurm printed nothing."""
    jobs: dict[str, dict[str, str | None]] = {}
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) < len(SQUEUE_FIELDS) or not cells[0].strip():
            continue
        # the command is last and may itself hold a "|": whatever is left belongs to it
        cells = [*cells[:len(SQUEUE_FIELDS) - 1], "|".join(cells[len(SQUEUE_FIELDS) - 1:])]
        jobs[cells[0].strip()] = {key: _value(cell) for key, cell in zip(SQUEUE_FIELDS, cells)}
    return jobs


def state_from_squeue(fields: dict[str, str | None]) -> JobState:
    state = (fields.get("state") or "UNKNOWN").split()[0]
    return JobState(job_id=str(fields["job_id"]), state=state, reason=fields.get("reason"),
                    nodes=_int(fields.get("nodes") or ""), nodelist=fields.get("nodelist"), name=fields.get("name"),
                    work_dir=fields.get("work_dir"), source="squeue")


def parse_sacct(text: str) -> dict[str, JobState]:
    """``sacct -n -P -X -o SACCT_FIELDS`` lines, by job id. A reused id (a reinstalled cluster) keeps its
    newest line: sacct lists them oldest first."""
    jobs: dict[str, JobState] = {}
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) < len(SACCT_FIELDS) or not cells[0].strip():
            continue
        row = dict(zip(SACCT_FIELDS, cells))
        job_id = row["JobID"].strip()
        # "CANCELLED by 1000": the state is the first word
        jobs[job_id] = JobState(job_id=job_id, state=row["State"].split()[0] if row["State"].strip() else "UNKNOWN",
                                reason=_value(row["Reason"]), nodes=_int(row["NNodes"]), nodelist=_value(row["NodeList"]),
                                name=_value(row["JobName"]), exit_code=_value(row["ExitCode"]),
                                work_dir=_value(row["WorkDir"]), source="sacct")
    return jobs


def parse_scontrol(text: str) -> dict[str, str]:
    """``scontrol show job -o JOBID``'s one line as key -> value (values may hold spaces: ``Command=a b``)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    keys = list(re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=", line))
    out = {}
    for i, match in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
        out[match.group(1)] = line[match.end():end].strip()
    return out


def query(job_id: str) -> JobState | None:
    """The job's state now: squeue while Slurm remembers it (MinJobAge after its end), then sacct."""
    out = command(["squeue", "-h", "-t", "all", "-j", job_id, "-o", SQUEUE_FORMAT])
    if out:
        fields = parse_squeue(out).get(job_id)
        if fields is not None:
            return state_from_squeue(fields)
    out = command(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", ",".join(SACCT_FIELDS)])
    return parse_sacct(out).get(job_id) if out else None


_cache: dict[str, tuple[float, JobState | None]] = {}
_lock = threading.Lock()


def job_state(job_id: Any, max_age: float = CACHE_SECONDS) -> JobState | None:
    """:func:`query`, answered from a cache younger than ``max_age`` seconds (readers poll every second or two)."""
    key = str(job_id)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < max_age:
        return hit[1]
    state = query(key) if available() else None
    with _lock:
        _cache[key] = (now, state)
    return state


def forget(job_id: Any = None) -> None:
    """Drop cached answers (one job's, or all): after a submit, a cancel, or in tests."""
    with _lock:
        if job_id is None:
            _cache.clear()
        else:
            _cache.pop(str(job_id), None)


def job_details(job_id: str) -> dict[str, str] | None:
    """``scontrol show job``'s fields (WorkDir, StdOut, Command, JobState, NodeList, ...), None when unknown."""
    out = command(["scontrol", "show", "job", "-o", job_id])
    fields = parse_scontrol(out) if out else {}
    return fields or None


KILLED_BY = ("CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE")  # Slurm ended it with a signal; the rest are failures


def ended_as(job: JobState, started: bool, stop_requested: bool) -> tuple[str, str | None]:
    """(ftui state, error) of a job Slurm ended while its run recorded no end (no supervisor got to it:
    cancelled in the queue, killed after KillWait, a node that failed)."""
    if job.state == "CANCELLED" and stop_requested and not started:
        return "stopped", None  # ftui stop on a queued job: nothing ran, nothing was lost
    what = f"Slurm job {job.job_id} ended {job.state}" + (f" ({job.reason})" if job.reason else "")
    if job.exit_code and job.exit_code != "0:0":
        what += f", exit code {job.exit_code}"
    if job.state == "COMPLETED":
        what += " without the run recording its end"
    what += f"; see {OUTPUT.replace('%j', job.job_id)}"
    return ("killed" if job.state in KILLED_BY else "crashed"), what


def describe(status: dict[str, Any]) -> str:
    """A run's queue state in a word or two, for a state column: the reason a queued job waits, or that a
    script written with --dry-run was never submitted."""
    queue = status.get("slurm")
    if isinstance(queue, dict) and queue.get("phase") == "queued":
        return str(queue.get("reason") or queue.get("state") or "queued")
    if status.get("slurm_script") and not status.get("slurm_job_id") and status.get("state") == "pending":
        return "not submitted"
    return ""
