"""Widgets of the ftui dashboard, one concern per module."""
