"""Launching: from a spec to a detached job that outlives the terminal.

Command lines and config files (``commands``), the checks before any run dir exists (``preflight``),
making and starting the run (``launcher``), the detached supervisor (``supervise``) and control requests
to a running job (``control``). Imports the root contracts and the plan.
"""
