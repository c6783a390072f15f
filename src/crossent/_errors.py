"""Errors shared by the command line and the modules it runs (kept apart so that neither
imports the other)."""

from __future__ import annotations


class UsageError(Exception):
    """A user error of the ``crossent`` command: reported as one line on stderr, exit 2."""
