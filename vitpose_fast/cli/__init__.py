"""The ``vitpose-fast`` command line (``python -m vitpose_fast.cli`` too): one module per command."""

from vitpose_fast.cli.main import build_parser, main

__all__ = ["main", "build_parser"]
