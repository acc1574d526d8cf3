"""Headless core of ftui: run spec, planner, launchers, training entry points, event stream, sources.

Nothing in this package imports Textual, and nothing at import time imports torch or transformers:
the modules that need them import them inside the functions that run in the training process.
"""
