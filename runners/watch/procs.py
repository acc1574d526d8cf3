"""Finding training processes on this machine (``ftui ps``, the dashboard's process screen, PID attach).

A training process is a launcher (torchrun, accelerate launch, deepspeed, ftui's supervisor), a
Python process with evidence of training (``runners.train`` or an ftui run dir, a Trainer script's
``--output_dir``, a training output written in its working dir since it started), or a Python
process with ML libraries below one of those (ranks, dataloader workers). ``/proc/PID/maps`` tells
whether torch plus safetensors or tokenizers are mapped, but that alone is no evidence: pytest or a
notebook that imports transformers maps the same. Processes are grouped into jobs by walking parent
links up to the topmost launcher. Only psutil and /proc are used: no training library is imported.
"""
from __future__ import annotations

import os
import shlex
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from runners.redaction import redact_argv
from runners.watch.output_dirs import RUN_DIR_FLAGS, TRAINER_OUTPUT_FLAGS, flag_value, fresh_output, locate_output_dir

LAUNCHER_MARKERS = {
    "torchrun": "torchrun", "torch.distributed.run": "torchrun", "torch.distributed.launch": "torchrun",
    "accelerate": "accelerate", "deepspeed": "deepspeed", "runners.launch.supervise": "ftui",
    "runners.supervise": "ftui",  # runs started before the supervisor moved into runners/launch/
}
ML_LIBRARIES = ("torch", "safetensors", "tokenizers", "deepspeed", "bitsandbytes", "flash_attn")


@dataclass
class Proc:
    pid: int
    ppid: int
    pgid: int | None
    cmdline: list[str]
    cwd: str | None
    create_time: float
    rss: int | None
    role: str  # launcher kind ("torchrun", "accelerate", "deepspeed", "ftui") or "worker"
    libraries: list[str] = field(default_factory=list)
    gpu_memory: dict[int, int | None] = field(default_factory=dict)

    @property
    def command(self) -> str:
        """The command line for display: secret flag values (``--hub_token hf_...``) are redacted.
        ``cmdline`` stays as it is, for finding output dirs; never show it directly."""
        return shlex.join(redact_argv(self.cmdline))


@dataclass
class Job:
    pid: int  # the job's root process
    launcher: str  # torchrun, accelerate, deepspeed, ftui, or python
    processes: list[Proc]
    output_dir: str | None
    output_dir_from: str | None  # how it was found: --output_dir, --run-dir, cwd scan
    run_dir: str | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    @property
    def workers(self) -> list[Proc]:
        return [p for p in self.processes if p.role == "worker"]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for proc in out["processes"]:  # JSON is displayed too: no secret from a command line in it
            proc["cmdline"] = redact_argv(proc["cmdline"])
        out["command"] = self.processes[0].command if self.processes else ""
        out["num_workers"] = len(self.workers)
        return out


def launcher_kind(cmdline: list[str]) -> str | None:
    """The launcher a command line runs, judged by its program or ``-m`` module, never by its arguments."""
    if not cmdline:
        return None
    i = 0
    if is_python(cmdline):
        i = 1
        while i < len(cmdline) and cmdline[i].startswith("-") and cmdline[i] != "-m":
            i += 1
        if i + 1 < len(cmdline) and cmdline[i] == "-m":
            module = cmdline[i + 1]
            if module.startswith("deepspeed.launcher"):
                return "deepspeed"
            if module == "accelerate.commands.launch":
                return "accelerate"
            return LAUNCHER_MARKERS.get(module) if module != "accelerate" else None
    if i >= len(cmdline):
        return None
    program, rest = os.path.basename(cmdline[i]), cmdline[i + 1:i + 2]
    if program in ("torchrun", "deepspeed"):
        return program
    if program == "accelerate" and rest == ["launch"]:
        return "accelerate"
    if program == "ftui" and rest and rest[0] in ("run", "demo", "resume"):
        return "ftui"
    return None


def is_python(cmdline: list[str]) -> bool:
    return bool(cmdline) and os.path.basename(cmdline[0]).startswith("python")


def mapped_libraries(pid: int) -> list[str]:
    """Which ML libraries a process has loaded native code of (from /proc/PID/maps)."""
    found: set[str] = set()
    try:
        with open(f"/proc/{pid}/maps", "rb") as fh:
            for line in fh:
                idx = line.find(b"site-packages/")
                if idx >= 0:
                    name = line[idx + 14:].split(b"/", 1)[0].decode(errors="replace")
                    if name in ML_LIBRARIES:
                        found.add(name)
    except OSError:
        return []
    return sorted(found)


def has_ml_libraries(libraries: list[str]) -> bool:
    """torch plus safetensors or tokenizers mapped: what transformers loads (not proof of training)."""
    return "torch" in libraries and ("safetensors" in libraries or "tokenizers" in libraries)


def entry_point(cmdline: list[str]) -> str | None:
    """The module (``-m``) or script a Python command line runs."""
    args = cmdline[1:]
    while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):
        args = args[1:]
    if len(args) >= 2 and args[0] == "-m":
        return args[1]
    return args[0] if args and args[0] != "-c" else None


def training_evidence(cmdline: list[str], cwd: str | None, since: float, libraries: list[str]) -> str | None:
    """Why a Python process is a training job on its own, or None: ML libraries mapped are not enough
    (pytest, a notebook or a script that imports transformers shows the same maps). Evidence is the
    ftui entry point or an ftui run dir, a Trainer script's ``--output_dir``, or a training output
    written below its working dir since it started. Under a launcher, no evidence is needed."""
    if not is_python(cmdline):
        return None
    if entry_point(cmdline) == "runners.train" or flag_value(cmdline, RUN_DIR_FLAGS):
        return "ftui run dir"
    if not has_ml_libraries(libraries):
        return None
    if flag_value(cmdline, TRAINER_OUTPUT_FLAGS):
        return "--output_dir"
    return "fresh output" if fresh_output(cwd, since) is not None else None


def _proc(p: psutil.Process, role: str, libraries: list[str]) -> Proc:
    info = p.info
    try:
        pgid = os.getpgid(p.pid)
    except OSError:
        pgid = None
    mem = info.get("memory_info")
    return Proc(pid=p.pid, ppid=info.get("ppid") or 0, pgid=pgid, cmdline=info.get("cmdline") or [],
                cwd=info.get("cwd"), create_time=info.get("create_time") or 0.0, rss=getattr(mem, "rss", None),
                role=role, libraries=libraries)


def scan() -> dict[int, Proc]:
    """Every launcher and training process on this machine (ours excluded), by pid: launchers, Python
    processes with evidence of training, and processes with ML libraries below either of those."""
    me = os.getpid()
    found: dict[int, Proc] = {}
    below: dict[int, tuple[psutil.Process, list[str]]] = {}  # ML processes that count only under a job
    attrs = ["pid", "ppid", "cmdline", "cwd", "create_time", "memory_info"]
    for p in psutil.process_iter(attrs):
        cmdline = p.info.get("cmdline") or []
        if p.pid == me or not cmdline:
            continue
        kind = launcher_kind(cmdline)
        if kind:
            found[p.pid] = _proc(p, kind, [])
            continue
        if not is_python(cmdline):
            continue
        libs = mapped_libraries(p.pid)
        if training_evidence(cmdline, p.info.get("cwd"), p.info.get("create_time") or 0.0, libs):
            found[p.pid] = _proc(p, "worker", libs)
        elif has_ml_libraries(libs):
            below[p.pid] = (p, libs)
    while adopted := [pid for pid, (p, _) in below.items()  # ranks under a launcher, dataloader workers
                      if (p.info.get("ppid") or 0) in found or _through_shells(p.info.get("ppid") or 0, found)]:
        for pid in adopted:
            p, libs = below.pop(pid)
            found[pid] = _proc(p, "worker", libs)
    return found


SHELLS = ("bash", "sh", "dash", "zsh", "fish")


def _through_shells(pid: int, procs: dict[int, Proc], hops: int = 3) -> int | None:
    """The first known process above ``pid`` when only shells (launch.sh, `bash -c`) lie between."""
    for _ in range(hops):
        try:
            parent = psutil.Process(pid)
            if parent.name() not in SHELLS:
                return None
            pid = parent.ppid()
        except psutil.Error:
            return None
        if pid in procs:
            return pid
    return None


def group(procs: dict[int, Proc]) -> list[Job]:
    """Jobs: each process under its topmost launcher ancestor.

    A launcher is never grouped under a plain Python process above it (pytest, a notebook, an IDE
    that started torchrun): that parent is not part of the job, and signalling the job must not
    reach it.
    """
    def parent_of(pid: int) -> int | None:
        me = procs[pid]
        parent = me.ppid if me.ppid in procs else _through_shells(me.ppid, procs)
        if parent is None or (me.role != "worker" and procs[parent].role == "worker"):
            return None
        return parent

    def root_of(pid: int) -> int:
        seen = {pid}
        while (parent := parent_of(pid)) is not None and parent not in seen:
            seen.add(parent)
            pid = parent
        return pid

    members: dict[int, list[Proc]] = {}
    for pid in procs:
        members.setdefault(root_of(pid), []).append(procs[pid])
    jobs = []
    for root, plist in members.items():
        plist.sort(key=lambda p: (p.pid != root, p.create_time, p.pid))
        out = run_dir = how = None
        for candidate in plist:  # a launcher's command usually carries the script's flags too
            out, how, run_dir = locate_output_dir(candidate.cmdline, candidate.cwd)
            if out:
                break
        launcher = next((p.role for p in plist if p.role != "worker"), "python")
        jobs.append(Job(pid=root, launcher=launcher, processes=plist, output_dir=out, output_dir_from=how,
                        run_dir=run_dir))
    return sorted(jobs, key=lambda j: j.processes[0].create_time)


def attach_gpu_memory(jobs: list[Job], gpu_processes: dict[int, dict[int, int | None]]) -> str | None:
    """Fill per-process GPU memory from NVML; a note when NVML's PIDs are not this namespace's."""
    if not gpu_processes:
        return None
    ours = {p.pid for j in jobs for p in j.processes}
    for job in jobs:
        for proc in job.processes:
            proc.gpu_memory = dict(gpu_processes.get(proc.pid, {}))
    if not ours & set(gpu_processes) and not any(psutil.pid_exists(pid) for pid in gpu_processes):
        return ("NVML reports GPU processes whose PIDs do not exist here (a container with its own PID "
                "namespace?): per-process GPU memory cannot be matched to these jobs.")
    return None


def find_jobs(telemetry: Any = None) -> tuple[list[Job], list[str]]:
    """Training jobs on this machine and notes to show with them (for `ftui ps` and the dashboard)."""
    jobs = group(scan())
    notes: list[str] = []
    if telemetry is not None:
        note = attach_gpu_memory(jobs, telemetry.gpu_processes())
        if note:
            notes.append(note)
        if telemetry.gpu_state != "ok":
            notes.append(f"GPU memory per process: N/A ({telemetry.gpu_state}).")
    return jobs, notes


def job_for_pid(pid: int) -> Job | None:
    """The job a pid belongs to: as a launcher, a worker, or a descendant of a launcher."""
    jobs = group(scan())
    for job in jobs:
        if pid in job.pids:
            return job
    try:
        parents = {p.pid for p in psutil.Process(pid).parents()}
    except psutil.Error:
        return None
    for job in jobs:
        if parents & set(job.pids):
            return job
    return None


def processes_for_dir(path: Path) -> list[int]:
    """Pids of running training jobs writing to ``path`` (used to tell 'running' from 'stopped')."""
    path = Path(path).resolve()
    out = []
    for job in group(scan()):
        if job.output_dir and Path(job.output_dir) == path:
            out += job.pids
    return out


def signal_job(job: Job, sig: int = signal.SIGINT) -> list[str]:
    """Send ``sig`` to the job's process group(s); never to ftui's own group. Says what it did."""
    protected = {os.getpgid(0)}  # ftui's own group and those of its ancestors (the shell, a test runner)
    for parent in psutil.Process().parents():
        try:
            protected.add(os.getpgid(parent.pid))
        except OSError:
            pass
    done = []
    groups = sorted({p.pgid for p in job.processes if p.pgid})
    for pgid in groups:
        if pgid in protected:
            continue
        try:
            os.killpg(pgid, sig)
            done.append(f"sent {signal.Signals(sig).name} to process group {pgid}")
        except ProcessLookupError:
            done.append(f"process group {pgid} is already gone")
    for proc in job.processes:  # processes sharing a protected group are signalled one by one
        if proc.pgid in protected or not proc.pgid:
            try:
                os.kill(proc.pid, sig)
                done.append(f"sent {signal.Signals(sig).name} to pid {proc.pid}")
            except ProcessLookupError:
                pass
    return done


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Pids still alive after waiting up to ``timeout`` seconds."""
    deadline = time.time() + timeout
    alive = [p for p in pids if psutil.pid_exists(p)]
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if _alive(p)]
    return alive


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
