"""Headless core of ftui, in the order a run flows through it.

The root holds the contracts every stage shares: the run spec (``spec``, ``spec_types``), the table of
strategies (``strategies``), errors, the event stream (``events``), the run dir (``rundir``, ``runstate``),
datasets (``data``), secrets (``redaction``), loopback networking, paths, and Slurm's answers (``slurm``).
Each stage is a subpackage that imports the root and the stages before it, never after: ``plan`` (estimates before any GPU hour),
``launch`` (command lines, preflight, supervisor, control), ``train`` (the entry point run in every rank,
one module per runner) and ``watch`` (reading any job: history, telemetry, processes, sources).
tests/test_layering.py holds the contract.

Nothing in this package imports Textual, and nothing at import time imports torch or transformers:
the modules that need them import them inside the functions that run in the training process.
"""
