"""Launching: from a spec to a detached job that outlives the terminal.

Command lines and config files (``commands``), the checks before any run dir exists (``preflight``),
making and starting the run (``launcher``), several machines (``multinode``), the detached supervisor
(``supervise``), control requests to a running job (``control``) and a run submitted to Slurm (``slurm``).
Imports the root contracts and the plan.
"""
