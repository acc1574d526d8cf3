"""The whole loop as a user drives it, in a real tmux terminal at 80x24 (or --size 120x40), screens saved.

runs list (empty) -> setup (n) -> back (escape) -> demo (d) -> monitor (enter) -> graceful stop (s) ->
quit (q) -> reopen ftui -> the stopped run's monitor -> `ftui attach RUN` -> `ftui runs` -> `ftui --plan`.
Each screen is saved as text under bench/results/tmux_<size>/NN-name.txt, and the script checks what a user
must read or copy is whole on it: the footer's help key, the full run id in the runs list and in `ftui runs`,
and the lever flags of `ftui --plan`. It prints a line per screen and exits 1 on the first cut-off.

Run: .venv/bin/python bench/tmux_loop.py [--size 80x24] [--keep]   (needs tmux; trains the demo, about 2 min)
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


class Term:
    """One tmux session running one command; keys in, screen text out."""

    def __init__(self, name: str, size: tuple[int, int], env: dict[str, str]) -> None:
        self.name, self.size, self.env = name, size, env

    def start(self, command: str) -> None:
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        for attempt in range(5):  # the server of a session just killed may still be exiting: start again
            done = subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(self.size[0]),
                                   "-y", str(self.size[1]), f"cd {shlex.quote(str(ROOT))} && env {exports} {command}; sleep 600"],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                return
            time.sleep(0.5 * (attempt + 1))
        raise SystemExit(f"tmux could not start a session: {done.stderr.strip()}")

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True,
                              check=True).stdout

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.screen()
            if re.search(pattern, text):
                return text
            time.sleep(0.3)
        raise SystemExit(f"timed out after {timeout:.0f} s waiting for /{pattern}/ on:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


class Recorder:
    def __init__(self, out: Path) -> None:
        self.out, self.n, self.problems = out, 0, []

    def save(self, name: str, text: str, must_show: tuple[str, ...] | list[str] = (),
             must_not: tuple[str, ...] = ()) -> None:
        """Saves the screen; what a user must read is checked whole, and any line cut with an ellipsis is listed."""
        self.n += 1
        (self.out / f"{self.n:02d}-{name}.txt").write_text(text)
        missing = [f"'{m}' is not whole on the screen" for m in must_show if m not in text]
        missing += [f"'{m}' is offered but should not be" for m in must_not if m in text]
        missing += [f"cut line: {line.strip()}" for line in text.splitlines() if "\u2026" in line]
        self.problems += [f"{self.n:02d}-{name}: {m}" for m in missing]
        print(f"{self.n:02d}-{name:<22} {'ok' if not missing else 'CUT: ' + ', '.join(missing)}")


def footer_help(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and re.search(r"(^|\s)(f1|\?)\s+Help\b", lines[-1]) is not None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="80x24")
    ap.add_argument("--keep", action="store_true", help="keep the runs dir (printed)")
    args = ap.parse_args()
    if not shutil.which("tmux"):
        print("tmux is not installed: apt install tmux", file=sys.stderr)
        return 2
    cols, rows = (int(x) for x in args.size.lower().split("x"))
    out = ROOT / "bench" / "results" / f"tmux_{cols}x{rows}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="ftui-tmux-"))
    runs = work / "runs"
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TERM": "xterm-256color",
           "FTUI_RUNS_DIR": str(runs), "COLUMNS": str(cols), "TZ": "UTC"}
    rec = Recorder(out)
    term = Term(f"ftui-loop-{os.getpid()}", (cols, rows), env)
    ftui = f"{shlex.quote(PY)} -m tui"
    try:
        term.start(f"{ftui} --runs-dir {shlex.quote(str(runs))}")
        text = term.wait_for(r"Help")
        rec.save("runs-empty", text, ["Help"] if footer_help(text) else ["f1 Help (footer)"])
        term.keys("n")
        text = term.wait_for(r"(?i)plan|model", 60)
        time.sleep(3)  # the plan is computed in a worker: let it land
        text = term.screen()
        rec.save("setup", text, ["Help"] if footer_help(text) else ["f1 Help (footer)"])
        term.keys("Escape")
        time.sleep(1)
        text = term.screen()
        if re.search(r"(?i)discard", text):
            rec.save("setup-discard-asked", text)
            term.keys("y")
        term.wait_for(r"(?i)runs|no runs", 30)
        term.keys("d")
        time.sleep(1)
        rec.save("demo-feedback", term.screen())
        text = term.wait_for(r"running|finished", 120)
        run_ids = sorted(p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))
        run_id = run_ids[-1]
        rec.save("runs-demo", text, [run_id])
        term.keys("Enter")
        term.wait_for(r"step [1-9]\d+/\d+", 240)  # ten steps in: the chart has losses
        time.sleep(6)
        text = term.screen()
        rec.save("monitor-live", text, ["Help"] if footer_help(text) else ["f1 Help (footer)"])
        term.keys("s")  # a graceful stop: a checkpoint, then the run ends (it does not ask: nothing is lost)
        time.sleep(1)
        if "Yes (y)" in (text := term.screen()):  # a confirmation dialog, should one be added
            rec.save("stop-asked", text)
            term.keys("y")
        term.wait_for(r"(?i)stopped|finished", 180)
        time.sleep(2)  # the footer follows the state on the next frame
        rec.save("monitor-stopped", term.screen(), must_not=("s Stop", "c Ckpt"))

        def reopen(command: str, pattern: str) -> Term:
            """Quit the dashboard on screen, then start ``command`` in a fresh session and wait for ``pattern``."""
            term.keys("q")
            time.sleep(1.5)
            term.close()
            fresh = Term(f"ftui-loop-{command.split()[-1][-12:]}-{os.getpid()}", (cols, rows), env)
            fresh.start(command)
            fresh.wait_for(pattern, 60)
            return fresh

        term = reopen(f"{ftui} --runs-dir {shlex.quote(str(runs))}", r"stopped|finished")
        rec.save("reopen-runs", term.screen(), [run_id])
        term.keys("Enter")
        term.wait_for(r"(?i)loss", 60)
        time.sleep(2)
        rec.save("reopen-monitor", term.screen(), must_not=("s Stop", "c Ckpt", "k Kill"))
        term = reopen(f"{ftui} attach {shlex.quote(str(runs / run_id))}", r"(?i)loss")
        time.sleep(2)
        rec.save("attach", term.screen())
        term.keys("q")
        term.close()

        plan = (f"{ftui} --plan --model_name_or_path meta-llama/Llama-3.1-8B --task causal-lm "
                "--per_device_train_batch_size 16 --max_seq_length 2048 --num_gpus 1 --gpu_memory_gib 24 "
                "--num_train_samples 10000")
        for name, command, must in (("ftui-runs", f"{ftui} runs --runs-dir {shlex.quote(str(runs))}", [run_id]),
                                    ("ftui-plan", plan, [])):
            # the command's whole output at the terminal's width: what a user scrolls back through and copies
            done = work / f"{name}.out"
            term = Term(f"ftui-loop-{name}-{os.getpid()}", (cols, rows), env)
            term.start(f"{command} > {shlex.quote(str(done))}.tmp 2>&1; mv {shlex.quote(str(done))}.tmp {shlex.quote(str(done))}")
            deadline = time.time() + 180
            while time.time() < deadline and not done.exists():
                time.sleep(0.3)
            full = done.read_text() if done.exists() else "(no output: timed out)"
            rec.save(name, full, must)
            term.close()
    finally:
        term.close()
        if args.keep:
            print("runs dir kept:", runs)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"screens saved under {out.relative_to(ROOT)}/")
    for problem in rec.problems:
        print("CUT OFF:", problem)
    return 1 if rec.problems else 0


if __name__ == "__main__":
    sys.exit(main())
