"""`ftui try RUN [--checkpoint best|latest|final|N|PATH] [--against CKPT|RUN[@CKPT]] [TEXT ...]`: use the model.

The checkpoint is loaded once in a warm child process (runners/results/try_session.py); each TEXT, or each line
read from stdin when none is given, gets the answer of the run's task: generated text streamed token by token,
labels with scores, or an embedding's similarity (``--pair``) and nearest eval rows. ``--against`` loads a
second checkpoint (of this run or another) and answers every input with both, side by side. ``--json`` prints
one JSON object per answer. This process never imports torch: the child does.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from runners import rundir
from runners.errors import UserError
from runners.results import generation, loading
from runners.results.checkpoints import CHOICES, kind_of
from runners.results.try_session import TryError, TrySession
from tui.commands.run import _common, _Parser, find

CHECKPOINT_HELP = "best|latest|final|N|PATH"
BAR = 24


def _parser() -> _Parser:
    p = _Parser(prog="ftui try", description="Try a run's model on your own inputs: generation streamed token by token "
                "(causal LM, sft, seq2seq), labels with scores (classification), similarity and nearest eval rows "
                "(embedding). With no TEXT, each line of stdin is one input and the model stays loaded.")
    p.add_argument("run", help="run id, unique part of it, path, or 'latest'")
    p.add_argument("text", nargs="*", help="inputs to answer (default: read lines from stdin)")
    _common(p)
    p.add_argument("--checkpoint", metavar=CHECKPOINT_HELP,
                   help="which save: default the best the run marked, else final, else the last (a running run: "
                        "its latest save)")
    p.add_argument("--against", metavar="CKPT|RUN[@CKPT]",
                   help="a second checkpoint answering the same inputs side by side: another of this run "
                        "(e.g. latest), or another run (RUN, or RUN@CKPT)")
    p.add_argument("--json", action="store_true", help="one JSON object per answer instead of text")
    g = p.add_argument_group("generation (causal LM, sft, seq2seq)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0, help="0 (the default) is greedy decoding")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0, help="sampling seed (the same for both sides of --against)")
    g.add_argument("--stop", action="append", default=[], metavar="TEXT", help="end the answer at TEXT (repeatable)")
    g.add_argument("--forbid", action="append", default=[], metavar="WORD", help="never generate WORD (repeatable)")
    g.add_argument("--force", action="append", default=[], metavar="WORD",
                   help="generate WORD before the answer ends (repeatable)")
    g.add_argument("--system", help="a system message (chat models)")
    g.add_argument("--no-chat", action="store_true", help="send the text as it is, without the chat template")
    e = p.add_argument_group("embedding")
    e.add_argument("--pair", help="a second text: print the cosine similarity of the two")
    e.add_argument("-k", type=int, default=generation.NEAREST_ROWS, help="nearest eval rows to show")
    return p


def params_of(args: Any) -> dict[str, Any]:
    params = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
              "repetition_penalty": args.repetition_penalty, "seed": args.seed, "stop": args.stop,
              "forbid": args.forbid, "force": args.force, "system": args.system, "chat": not args.no_chat,
              "pair": args.pair, "k": args.k}
    try:
        generation.check_params(params)
    except UserError as exc:
        raise UserError(f"--{str(exc).split(' ')[0].replace('_', '-')}: {exc}") from None
    return params


def is_checkpoint_name(ref: str) -> bool:
    spelled = ref.strip().lower()
    return spelled in (*CHOICES, "latest") or spelled.removeprefix("checkpoint-").isdigit()


def against(ref: str, run_dir: Path, runs_dir: Path) -> tuple[Path, str | None]:
    """(run dir, checkpoint) of --against: a checkpoint of this run, a checkpoint folder, or another run."""
    if "@" in ref:
        run, _, ckpt = ref.partition("@")
        return find(runs_dir, run), ckpt or None
    if is_checkpoint_name(ref):
        return run_dir, ref
    if kind_of(Path(ref).expanduser()) is not None:
        return run_dir, ref  # a checkpoint folder
    return find(runs_dir, ref), None


def _bar(score: float) -> str:
    full = round(score * BAR)
    return "█" * full + "·" * (BAR - full)


def show_result(task: str, result: dict[str, Any], out: Any = sys.stdout) -> None:
    """The done line's result as text (a generation's tokens were already printed as they came)."""
    if "labels" in result:
        width = max(len(r["label"]) for r in result["labels"])
        for r in result["labels"]:
            out.write(f"  {r['label']:<{width}}  {r['score']:.4f}  {_bar(r['score'])}\n")
    elif "value" in result:
        out.write(f"  value {result['value']:.6g}\n")
    if "similarity" in result:
        out.write(f"  cosine similarity {result['similarity']:.4f}\n")
    if result.get("nearest"):
        out.write(f"  nearest of {result['searched_rows']} eval rows:\n")
        for r in result["nearest"]:
            label = f"  [{r['label']}]" if "label" in r else ""
            out.write(f"    {r['score']:.4f}  {r['text'][:100]}{label}\n")
    elif result.get("nearest_error"):
        out.write(f"  {result['nearest_error']}\n")
    if "text" in result:
        facts = [f"{result['tokens']} tokens"]
        if result.get("first_token_s") is not None:
            facts.append(f"first token {result['first_token_s'] * 1000:.0f} ms")
        if result.get("tokens_per_s"):
            facts.append(f"{result['tokens_per_s']:.1f} tokens/s")
        facts.append(f"ended: {result['stopped']}")
        if result.get("unknown_words"):
            facts.append("not in the vocabulary: " + ", ".join(result["unknown_words"]))
        out.write(f"\n  ({', '.join(facts)})\n")


def answer(session: TrySession, slot: str, facts: dict[str, Any], text: str, params: dict[str, Any],
           as_json: bool, label: str | None) -> dict[str, Any]:
    if label and not as_json:
        sys.stdout.write(f"── {label}\n")
    streamed = False
    result: dict[str, Any] = {}
    for message in session.ask(text, slot=slot, **params):
        if message["event"] == "token" and not as_json:
            if not streamed:
                sys.stdout.write("  ")
                streamed = True
            sys.stdout.write(message["text"].replace("\n", "\n  "))
            sys.stdout.flush()
        elif message["event"] == "done":
            result = message["result"]
    if as_json:
        sys.stdout.write(json.dumps({"input": text, "slot": slot, "checkpoint": facts["checkpoint"],
                                     "task": facts["task"], **result}) + "\n")
    else:
        show_result(facts["task"], result)
    sys.stdout.flush()
    return result


def _inputs(texts: list[str]) -> Any:
    if texts:
        yield from texts
        return
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stderr.write("› ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            return
        if line.strip():
            yield line.rstrip("\n")


def loaded_line(run_dir: Path, facts: dict[str, Any]) -> str:
    notes = "; ".join(facts.get("notes") or [])
    return (f"loaded {facts['checkpoint']} of run {run_dir.name} ({facts['why']}): {facts['task']} on {facts['device']}"
            f", {facts.get('load_seconds', 0):.1f} s" + (f"\n  {notes}" if notes else ""))


def main(command: str, argv: list[str]) -> int:
    args = _parser().parse_intermixed_args(argv)  # options may come after the texts
    runs_dir = rundir.default_runs_dir(args.runs_dir)
    run_dir = find(runs_dir, args.run)
    params = params_of(args)
    sides = [(run_dir, args.checkpoint)]
    if args.against:
        sides.append(against(args.against, run_dir, runs_dir))
    for side_dir, which in sides:  # every bad name is said before a model process starts
        loading.run_spec(side_dir)
        loading.choose(side_dir, which)
    live = any((rundir.read_status(d) or {}).get("state") in ("running", "pending") for d, _ in sides)
    with TrySession(nice=live) as session:
        facts = []
        for slot, (side_dir, which) in zip("ab", sides):
            facts.append(session.load(side_dir, which, slot=slot))
            print(f"ftui try: {loaded_line(side_dir, facts[-1])}", file=sys.stderr)
        if len(facts) == 2 and facts[0]["path"] == facts[1]["path"]:
            print(f"ftui try: note: both sides are {facts[0]['path']}: the answers will be the same", file=sys.stderr)
        labels = [f"{f['checkpoint']} · {d.name}" for f, (d, _) in zip(facts, sides)] if len(sides) > 1 else [None]
        failed = False
        for text in _inputs(args.text):
            for slot, fact, label in zip("ab", facts, labels):
                try:
                    answer(session, slot, fact, text, params, args.json, label)
                except TryError as exc:
                    print(f"ftui try: error: {exc}", file=sys.stderr)
                    failed = True
    return 2 if failed and args.text else 0
