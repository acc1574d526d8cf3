"""Try: time to the first token of a warm session, against a fresh script, and the dashboard's responsiveness
while the model generates.

1. **First token.** A TrySession (the worker `ftui try` and the Try tab start) loads a run's checkpoint once,
   then answers PROMPTS prompts; for each, the wall time from sending the prompt to the first streamed token
   as this process sees it (pipe and JSON included) and the worker's own figure. The peer, in the same run:
   what a user does without ftui, a fresh `python` script that imports transformers and peft, loads the
   same checkpoint and streams the same prompt (SCRIPTS of them). Ratio: script / warm session.
2. **Responsiveness.** The dashboard (headless, 120x40) on the run's monitor, Try tab: an event-loop probe
   asks for a wake-up every 10 ms for 2 s and records how late each comes, first idle, then while a long
   answer streams in; then a key press (the Evals tab) is timed, idle and while it streams.

The run: --run DIR, else the sft demo (assets/specs/demo_sft.yaml, the LoRA chat model) trained here first.
Run: .venv/bin/python bench/try_latency.py [--run DIR] [--prompts 10] [--scripts 3] [--device-note TEXT]
Writes bench/results/try_latency.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from runners.results.try_session import TrySession  # noqa: E402

PROMPT_WORDS = ["hello", "say good morning in french", "capital of kenya", "what colour is the sky", "count to three"]
SCRIPT = r"""
import json, sys, threading, time
t0 = time.monotonic()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer
from peft import PeftModel
base, ckpt, prompt, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tok = AutoTokenizer.from_pretrained(ckpt)
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
model = PeftModel.from_pretrained(model, ckpt).eval()
inputs = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                 return_tensors="pt", return_dict=True)
streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
threading.Thread(target=model.generate, kwargs=dict(**inputs, streamer=streamer, max_new_tokens=n, do_sample=False)).start()
first = None
for piece in streamer:
    if piece and first is None:
        first = time.monotonic() - t0
print(json.dumps({"first_token_s": first}))
"""


def train_demo(where: Path) -> Path:
    import yaml

    spec = yaml.safe_load((ROOT / "assets/specs/demo_sft.yaml").read_text())
    for section, key in (("model", "name_or_path"), ("dataset", "train")):
        spec[section][key] = str((ROOT / "assets/specs" / spec[section][key]).resolve())
    path = where / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    subprocess.run([sys.executable, "-m", "tui", "run", str(path), "--runs-dir", str(where / "runs"), "--headless"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return next(p for p in (where / "runs").iterdir() if p.is_dir())


def warm_first_tokens(run: Path, prompts: int, tokens: int) -> dict[str, object]:
    started = time.monotonic()
    with TrySession() as session:
        session.ready.wait(120)
        ready = time.monotonic() - started
        facts = session.load(run)
        loaded = time.monotonic() - started
        wall, worker, rates = [], [], []
        for i in range(prompts):
            sent, first = time.monotonic(), None
            for message in session.ask(PROMPT_WORDS[i % len(PROMPT_WORDS)], max_new_tokens=tokens):
                if message["event"] == "token" and first is None:
                    first = time.monotonic() - sent
                if message["event"] == "done":
                    worker.append(message["result"]["first_token_s"])
                    rates.append(message["result"]["tokens_per_s"] or 0)
            wall.append(first)
    return {"facts": facts, "ready_s": ready, "load_s": loaded - ready, "wall": wall, "worker": worker, "rates": rates}


def script_first_tokens(facts: dict[str, object], run: Path, scripts: int, tokens: int) -> list[float]:
    base = run / "output" / "base"
    out = []
    for i in range(scripts):
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(base), str(facts["path"]),
                               PROMPT_WORDS[i % len(PROMPT_WORDS)], str(tokens)], capture_output=True, text=True,
                              cwd=ROOT, check=True)
        out.append(json.loads(proc.stdout.strip().splitlines()[-1])["first_token_s"])  # from the script's first line
    return out


async def responsiveness(run: Path, tokens: int) -> dict[str, object]:
    from textual.widgets import TabbedContent

    from runners.watch.sources import open_source
    from tui.app import make_app
    from tui.screens.monitor import MonitorScreen
    from tui.widgets.try_panel import TryPanel

    app = make_app(runs_dir=run.parent, source=open_source(str(run)))

    async def probe(seconds: float) -> list[float]:
        out = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            asked = time.monotonic()
            await asyncio.sleep(0.01)
            out.append(time.monotonic() - asked - 0.01)
        return out

    async def switch_tabs(pilot, app) -> float:  # type: ignore[no-untyped-def]
        """Seconds from the key `e` (the Evals tab) to the tab shown, off the prompt first."""
        await pilot.press("escape")
        t0 = time.monotonic()
        pressed = asyncio.ensure_future(pilot.press("e"))  # press() also waits for the tab's animation: not counted
        while app.screen.query_one(TabbedContent).active != "evals":
            await asyncio.sleep(0.001)
        took = time.monotonic() - t0
        await pressed
        return took

    async with app.run_test(size=(120, 40)) as pilot:
        while not isinstance(app.screen, MonitorScreen):
            await pilot.pause(0.05)
        await pilot.press("i")
        panel = app.screen.query_one(TryPanel)
        panel.query_one("#try-settings").value = "max_new_tokens=8"  # type: ignore[attr-defined]
        await pilot.press(*"hello", "enter")  # the first prompt loads the model
        while "a" not in panel.results:
            await pilot.pause(0.05)
        idle = await probe(2.0)
        idle_switch = await switch_tabs(pilot, app)
        app.screen.query_one(TabbedContent).active = "try"
        app.screen.query_one("#try-input").focus()
        # plain text, no chat template: the demo chat model then rambles on to max_new_tokens instead of ending
        panel.query_one("#try-settings").value = f"max_new_tokens={tokens} chat=false"  # type: ignore[attr-defined]
        panel.query_one("#try-input").value = "how do I make tea"  # type: ignore[attr-defined]
        panel.results.clear()
        await pilot.press("enter")  # a long answer streams now
        while panel.pieces["a"] < 2:
            await pilot.pause(0.01)
        gen_started = time.monotonic()
        lags = await probe(2.0)  # the event loop while tokens stream in, no keys pressed
        switch = await switch_tabs(pilot, app)  # then a key, still while it streams
        pieces_during = panel.pieces["a"]
        app.screen.query_one(TabbedContent).active = "try"
        while "a" not in panel.results:
            await pilot.pause(0.05)
        streamed_for = time.monotonic() - gen_started
    return {"idle": idle, "busy": lags, "switch_s": switch, "idle_switch_s": idle_switch, "pieces": pieces_during,
            "streamed_for": streamed_for, "result": panel.results["a"]}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--scripts", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--device-note", default="")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "try_latency.md")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tmp = Path(tempfile.mkdtemp(prefix="ftui-try-bench-"))
    run = args.run or train_demo(tmp)
    warm = warm_first_tokens(run, args.prompts, args.tokens)
    scripts = script_first_tokens(warm["facts"], run, args.scripts, args.tokens)  # type: ignore[arg-type]
    ui = asyncio.run(responsiveness(run, 400))
    wall = [w for w in warm["wall"] if w is not None]  # type: ignore[union-attr]
    median_warm, median_script = statistics.median(wall), statistics.median(scripts)
    ms = 1000.0
    lines = [
        "# Try: first token and UI responsiveness", "",
        f"`.venv/bin/python bench/try_latency.py {' '.join(sys.argv[1:])}`".replace("  ", " "),
        f"model: {warm['facts']['checkpoint']} of {run.name} ({warm['facts']['task']}, "  # type: ignore[index]
        f"{warm['facts']['kind']}) on {warm['facts']['device']}; load average {os.getloadavg()[0]:.2f}"  # type: ignore[index]
        + (f"; {args.device_note}" if args.device_note else ""), "",
        "| first token | median | p90 | n |", "|---|---|---|---|",
        f"| warm session, as the client sees it | {median_warm * ms:.1f} ms | {pct(wall, 0.9) * ms:.1f} ms | {len(wall)} |",
        f"| warm session, inside the worker | {statistics.median(warm['worker']) * ms:.1f} ms | "  # type: ignore[arg-type]
        f"{pct(warm['worker'], 0.9) * ms:.1f} ms | {len(warm['worker'])} |",  # type: ignore[arg-type]
        f"| fresh script (import, load, generate) | {median_script * ms:.0f} ms | {pct(scripts, 0.9) * ms:.0f} ms | "
        f"{len(scripts)} |", "",
        f"**fresh script / warm session: {median_script / median_warm:.0f}x** to the first token. The session's one-time "
        f"cost: worker ready {warm['ready_s']:.1f} s, checkpoint loaded {warm['load_s']:.1f} s later; "
        f"{statistics.median(warm['rates']):.0f} tokens/s.", "",  # type: ignore[arg-type]
        "| dashboard event loop (10 ms timer) | p50 lateness | p99 | max | n |", "|---|---|---|---|---|",
        f"| idle, model loaded | {pct(ui['idle'], .5) * ms:.1f} ms | {pct(ui['idle'], .99) * ms:.1f} ms | "  # type: ignore[arg-type]
        f"{max(ui['idle']) * ms:.1f} ms | {len(ui['idle'])} |",  # type: ignore[arg-type]
        f"| while an answer streams | {pct(ui['busy'], .5) * ms:.1f} ms | {pct(ui['busy'], .99) * ms:.1f} ms | "  # type: ignore[arg-type]
        f"{max(ui['busy']) * ms:.1f} ms | {len(ui['busy'])} |", "",  # type: ignore[arg-type]
        f"The key `e` (Evals tab) took {ui['switch_s'] * ms:.0f} ms while it streamed, {ui['idle_switch_s'] * ms:.0f} ms "
        f"idle (ratio {ui['switch_s'] / ui['idle_switch_s']:.2f}); {ui['pieces']} pieces had arrived by the "
        f"end of the busy probe; the answer ({ui['result']['tokens']} tokens) ended after {ui['streamed_for']:.1f} s.",  # type: ignore[index]
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
