"""Entry point ``ftui``: dispatches to one module per command, imported only when used.

Each command module has ``main(command: str, argv: list[str]) -> int`` and owns its argparse
parser, so ``ftui --plan`` never imports Textual and ``ftui`` with no arguments imports no
training library. A :class:`runners.errors.UserError` anywhere becomes one paragraph on stderr and
exit code 2.
"""
from __future__ import annotations

import importlib
import sys

from runners.errors import USER_ERROR_EXIT, UserError, did_you_mean

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("tui.commands.plan", "estimate memory per GPU, strategy advice and cadence (also: ftui --plan)"),
    "run": ("tui.commands.run", "launch a run from a spec as a detached job"),
    "demo": ("tui.commands.run", "train the bundled demo on CPU, offline (about a minute)"),
    "stop": ("tui.commands.run", "ask a run to stop gracefully after saving a checkpoint"),
    "checkpoint": ("tui.commands.run", "ask a run to save a checkpoint now and go on"),
    "kill": ("tui.commands.run", "kill a run's whole process group"),
    "resume": ("tui.commands.run", "continue a run from its last checkpoint into a new run"),
    "join": ("tui.commands.join", "start another node of a multi-node run on this machine (shared run dir)"),
    "runs": ("tui.commands.run", "list the runs in the runs dir"),
    "export": ("tui.commands.export", "write a run's adapter, or a merged full model (--merge), for from_pretrained"),
    "eval": ("tui.commands.eval", "a run's metrics on a held-out file (+ confusion matrix, perplexity), recorded in the run dir"),
    "try": ("tui.commands.try_model", "try a run's model on your inputs: streamed generation, labels, similarity"),
    "compare": ("tui.commands.compare", "runs side by side: curves, best metrics, duration, memory, spec differences"),
    "attach": ("tui.commands.attach", "watch any training job: run dir, output dir, TensorBoard, wandb or PID"),
    "ps": ("tui.commands.attach", "list training processes on this machine, grouped by job"),
    "ui": ("tui.commands.ui", "open the dashboard (the default with no command)"),
}

USAGE = "usage: ftui [COMMAND] [ARGS...]   (ftui COMMAND --help for a command's options)\n\ncommands:\n" + "".join(
    f"  {name:<11} {help_}\n" for name, (_, help_) in COMMANDS.items()
) + "\nWith no command, ftui opens the dashboard.\n"


def _split(argv: list[str]) -> tuple[str, list[str]]:
    if not argv:
        return "ui", []
    if "--plan" in argv:  # `ftui --plan ...` is the headless planner, as documented
        rest = list(argv)
        rest.remove("--plan")
        if rest and rest[0] == "plan":
            rest = rest[1:]
        return "plan", rest
    head = argv[0]
    if head in COMMANDS:
        return head, argv[1:]
    if head.startswith("-"):
        return "ui", argv
    raise UserError(f"Unknown command '{head}'.{did_you_mean(head, COMMANDS)} "
                    f"Run 'ftui --help' to list the commands.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    try:
        command, rest = _split(argv)
        module = importlib.import_module(COMMANDS[command][0])
        return int(module.main(command, rest) or 0)
    except UserError as exc:
        sys.stderr.write(f"ftui: error: {exc}\n")
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
