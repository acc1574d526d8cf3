"""Watching: reading any training job, ftui's or not.

The run history (``history``), host and GPU telemetry (``telemetry``), process discovery (``procs``), Slurm
jobs (``slurm``) and the sources a job can be read from (``sources``, with the file formats they parse in
``sources/formats``). Imports only the root contracts.
"""
