"""Screens of the ftui dashboard: runs, setup (with the plan preview), monitor, help and dialogs."""
