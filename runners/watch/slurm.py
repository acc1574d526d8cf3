"""Slurm training jobs of this user, ftui's and foreign ones, for ``ftui ps`` and ``ftui attach JOBID``.

A job runs on nodes this machine cannot see into, so what it is comes from Slurm: ``squeue`` (state, reason,
nodes, work dir, the batch script's path) and, for one job, ``scontrol`` (its stdout file) and its batch
script (``scontrol write batch_script``). An ftui job is one whose work dir is an ftui run dir (sbatch.sh
sets ``--chdir`` to it). A foreign job is a training job when its script starts a launcher (torchrun,
accelerate launch, deepspeed, ``runners.train``) or passes a Trainer's ``--output_dir``, or when its work dir
holds a training output; the output dir is found as for a process (runners/watch/output_dirs.py): the
script's ``--output_dir``, else a bounded scan of the work dir. No Slurm here is normal: None, never a raise.
"""
from __future__ import annotations

import getpass
import re
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runners import rundir, slurm
from runners.watch.output_dirs import fresh_output, locate_output_dir

MAX_JOBS = 50  # scripts read per `ftui ps` (one scontrol call each)
LAUNCH_WORDS = re.compile(r"\b(torchrun|accelerate\s+launch|deepspeed|torch\.distributed\.(run|launch)|runners\.train|"
                          r"runners\.launch\.supervise)\b|--output[_-]dir\b")
JOB_ID = re.compile(r"^(?:slurm:)?(\d+(?:_\d+)?)$")


@dataclass
class SlurmJob:
    job_id: str
    name: str | None
    state: str
    reason: str | None  # why it waits (Priority, Resources, ...), None once it runs
    nodes: int | None
    nodelist: str | None
    work_dir: str | None
    script: str | None  # the batch script's path, as submitted (None for --wrap)
    run_dir: str | None  # an ftui run
    output_dir: str | None
    output_dir_from: str | None  # ftui run dir, --output_dir, work dir scan
    evidence: str | None  # why it counts as training

    @property
    def label(self) -> str:
        return f"slurm job {self.job_id}" + (f" ({self.name})" if self.name else "")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


def parse_job_id(target: str) -> str | None:
    """``1234``, ``1234_5`` (an array task) or ``slurm:1234``: the job id; None for anything else."""
    match = JOB_ID.match(target.strip())
    return match.group(1) if match else None


def batch_script(job_id: str) -> str | None:
    """The job's batch script as Slurm stored it (any user's own jobs; None when Slurm will not say)."""
    return slurm.command(["scontrol", "write", "batch_script", job_id, "-"])


def _words(script: str) -> list[str]:
    try:
        return shlex.split(script, comments=True)
    except ValueError:  # an unbalanced quote: whitespace words are enough to find flags
        return script.split()


def _start_time(text: str | None) -> float:
    """squeue's start time (local time, ``2026-12-02T02:06:21``) as a unix time; the far future when unknown."""
    try:
        return time.mktime(time.strptime(str(text), "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, OverflowError):
        return float("inf")


def classify(fields: dict[str, str | None], script: str | None) -> SlurmJob:
    """One squeue line (runners.slurm.parse_squeue) and its script, as a job: ftui's, foreign training, or neither."""
    state = slurm.state_from_squeue(fields)
    work_dir = fields.get("work_dir")
    command = fields.get("command")
    run_dir: str | None = None
    out = how = evidence = None
    if work_dir and rundir.is_run_dir(Path(work_dir)):
        run_dir, out, how, evidence = work_dir, str(Path(work_dir) / rundir.OUTPUT_DIR), "ftui run dir", "ftui run"
    elif script and (found := LAUNCH_WORDS.search(script)):
        out, how, run_dir = locate_output_dir(_words(script), work_dir)
        how, evidence = ("work dir scan" if how == "cwd scan" else how), found.group(0).split()[0]
        if run_dir and not rundir.is_run_dir(Path(run_dir)):
            run_dir = None
    else:  # no launcher in the script: training only if it wrote an output since the job started
        fresh = fresh_output(work_dir, _start_time(fields.get("start"))) if state.phase != "queued" else None
        if fresh is not None:
            out, how, evidence = str(fresh), "work dir scan", "training output in its work dir"
    return SlurmJob(job_id=state.job_id, name=state.name, state=state.state, reason=state.reason if state.phase == "queued"
                    else None, nodes=state.nodes, nodelist=state.nodelist, work_dir=work_dir, script=command,
                    run_dir=run_dir, output_dir=out, output_dir_from=how, evidence=evidence)


def list_jobs(user: str | None = None, limit: int = MAX_JOBS) -> list[SlurmJob] | None:
    """This user's training jobs in the queue (pending, running), oldest first; None when Slurm does not answer."""
    if not slurm.available():
        return None
    out = slurm.command(["squeue", "-h", "-u", user or getpass.getuser(), "-o", slurm.SQUEUE_FORMAT])
    if out is None:
        return None
    jobs = []
    for job_id, fields in list(slurm.parse_squeue(out).items())[:limit]:
        is_ftui = bool(fields.get("work_dir") and rundir.is_run_dir(Path(str(fields["work_dir"]))))
        job = classify(fields, None if is_ftui else batch_script(job_id))
        if job.evidence:
            jobs.append(job)
    return sorted(jobs, key=lambda j: [int(p) for p in re.findall(r"\d+", j.job_id)])


def find_job(job_id: str) -> SlurmJob | None:
    """One job by id, whatever its state while Slurm remembers it (for ``ftui attach JOBID``); None when unknown."""
    out = slurm.command(["squeue", "-h", "-t", "all", "-j", job_id, "-o", slurm.SQUEUE_FORMAT])
    fields = slurm.parse_squeue(out).get(job_id) if out else None
    if fields is None:
        return None
    is_ftui = bool(fields.get("work_dir") and rundir.is_run_dir(Path(str(fields["work_dir"]))))
    return classify(fields, None if is_ftui else batch_script(job_id))


def stdout_file(job_id: str) -> str | None:
    """Where the job's stdout goes (``scontrol show job``'s StdOut), with Slurm's %j filled in already."""
    details = slurm.job_details(job_id) or {}
    return details.get("StdOut") or None
