"""Finding training processes on this machine (``ftui ps``, the dashboard's process screen, PID attach).

A training process is a launcher (torchrun, accelerate launch, deepspeed, ftui's supervisor) or a
Python process running transformers / simpletransformers / sentence-transformers / ``runners.train``.
The command line decides when it can; otherwise ``/proc/PID/maps`` tells whether torch plus
safetensors or tokenizers (which transformers loads) are mapped: libraries show up there, pure
Python modules do not. Processes are grouped into jobs by walking parent links up to the topmost
launcher. Only psutil and /proc are used: no training library is imported.
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

LAUNCHER_MARKERS = {
    "torchrun": "torchrun", "torch.distributed.run": "torchrun", "torch.distributed.launch": "torchrun",
    "accelerate": "accelerate", "deepspeed": "deepspeed", "runners.launch.supervise": "ftui",
    "runners.supervise": "ftui",  # runs started before the supervisor moved into runners/launch/
}
SUPERVISOR_MODULES = ("runners.launch.supervise", "runners.supervise")
OUTPUT_FLAGS = ("--output_dir", "--output-dir", "--outdir", "--output")
RUN_DIR_FLAGS = ("--run-dir", "--run_dir")
OUTPUT_MARKERS = ("trainer_state.json", "training_progress_scores.csv", "status.json", "events.jsonl")


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
                    if name in ("torch", "safetensors", "tokenizers", "deepspeed", "bitsandbytes", "flash_attn"):
                        found.add(name)
    except OSError:
        return []
    return sorted(found)


def looks_like_training(cmdline: list[str], libraries: list[str]) -> bool:
    if not is_python(cmdline):
        return False
    text = " ".join(cmdline).lower()
    if "runners.train" in text or any(m in text for m in ("simpletransformers", "sentence_transformers")):
        return True
    if "torch" in libraries and ("safetensors" in libraries or "tokenizers" in libraries):
        return True
    return False


def _flag_value(cmdline: list[str], flags: tuple[str, ...]) -> str | None:
    for i, arg in enumerate(cmdline):
        for flag in flags:
            if arg == flag and i + 1 < len(cmdline):
                return cmdline[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def _newest_output_below(cwd: Path, depth: int = 2, budget: list[int] | None = None) -> Path | None:
    """The most recently written dir under cwd that looks like a training output (bounded scan)."""
    budget = budget if budget is not None else [2000]
    best: tuple[float, Path] | None = None
    try:
        entries = list(os.scandir(cwd))
    except OSError:
        return None
    for entry in entries:
        budget[0] -= 1
        if budget[0] < 0:
            break
        try:
            found = _output_candidate(entry, depth, budget)
        except OSError:  # unreadable entries (permissions, vanished files) are not outputs
            continue
        if found is not None and (best is None or found[0] > best[0]):
            best = found
    return best[1] if best else None


def _output_candidate(entry: os.DirEntry, depth: int, budget: list[int]) -> tuple[float, Path] | None:
    """(mtime, dir) when this entry marks its dir (or a dir below it) as a training output."""
    here = Path(entry.path).parent
    if entry.is_file():
        if entry.name in OUTPUT_MARKERS or entry.name.startswith("events.out.tfevents."):
            return entry.stat().st_mtime, here
        return None
    if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
        return None
    if entry.name.startswith("checkpoint-") or entry.name == "wandb":
        return entry.stat().st_mtime, here
    if depth > 0 and entry.name not in ("node_modules", "__pycache__", "site-packages", "proc", "sys", "dev"):
        below = _newest_output_below(Path(entry.path), depth - 1, budget)
        if below is not None:
            return below.stat().st_mtime, below
    return None


def locate_output_dir(cmdline: list[str], cwd: str | None) -> tuple[str | None, str | None, str | None]:
    """(output_dir, how it was found, ftui run dir) for a training command line."""
    base = Path(cwd) if cwd else Path("/")
    for i, arg in enumerate(cmdline):
        if arg in SUPERVISOR_MODULES and i + 1 < len(cmdline):
            run_dir = (base / cmdline[i + 1]).resolve()
            return str(run_dir / "output"), "ftui run dir", str(run_dir)
    run_dir_arg = _flag_value(cmdline, RUN_DIR_FLAGS)
    if run_dir_arg:
        run_dir = (base / run_dir_arg).resolve()
        return str(run_dir / "output"), "--run-dir", str(run_dir)
    out = _flag_value(cmdline, OUTPUT_FLAGS)
    if out:
        return str((base / out).resolve()), "--output_dir", None
    if cwd:
        found = _newest_output_below(base)
        if found is not None:
            return str(found), "cwd scan", None
    return None, None, None


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
    """Every launcher and training worker on this machine (ours excluded), by pid."""
    me = os.getpid()
    found: dict[int, Proc] = {}
    attrs = ["pid", "ppid", "cmdline", "cwd", "create_time", "memory_info"]
    for p in psutil.process_iter(attrs):
        if p.pid == me:
            continue
        cmdline = p.info.get("cmdline") or []
        if not cmdline:
            continue
        kind = launcher_kind(cmdline)
        if kind:
            found[p.pid] = _proc(p, kind, [])
            continue
        if not is_python(cmdline):
            continue
        libs = mapped_libraries(p.pid)
        if looks_like_training(cmdline, libs):
            found[p.pid] = _proc(p, "worker", libs)
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
