"""The ``vitpose-fast`` command line (``python -m vitpose_fast.cli`` too)."""

from vitpose_fast.cli.commands import main

__all__ = ["main"]
