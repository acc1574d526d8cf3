"""One module per CLI command, by stage: ``plan`` (with ``plan_report``, the plan as text), ``run``
(launch, stop, resume, runs), ``attach`` (attach, ps) and ``ui`` (the dashboard). tui/cli.py imports
only the one a command needs."""
