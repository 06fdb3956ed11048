"""The ``vitpose-fast`` parser and :func:`main`, which turns every user mistake into one line on stderr.

Each command is a module of this package with ``add_parser(subparsers)`` (its options, and ``func`` to run)
and ``run(args) -> exit status``; a new command is a new module listed in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from vitpose_fast.cli import eval as eval_cmd
from vitpose_fast.cli import export, merge, predict, train
from vitpose_fast.cli.common import PROG, CliError

COMMANDS = (predict, merge, eval_cmd, export, train)
TRACEBACK_ENV = "VITPOSE_FAST_TRACEBACK"


class _Parser(argparse.ArgumentParser):
    """Option mistakes as one line (argparse prints the usage first); ``--help`` still shows it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="ViTPose top-down inference, evaluation, export and "
                                                             "training")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if not text.startswith(f"{PROG}: ") else text[len(PROG) + 2:]


def _user_errors() -> tuple:
    """The exception types that describe a bad input rather than a bug in vitpose_fast."""
    from vitpose_fast.data.detections import DetectionFileError
    from vitpose_fast.model.checkpoint import CheckpointError
    from vitpose_fast.model.fp8 import Fp8UnavailableError

    return (CliError, CheckpointError, DetectionFileError, Fp8UnavailableError, OSError, ValueError, ImportError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns its exit status. A user mistake raises ``SystemExit`` with one line
    (``vitpose-fast: what is wrong``, exit status 1) and no traceback; results finished before it stay written.
    An unexpected error is one line too, naming ``VITPOSE_FAST_TRACEBACK=1`` to see its traceback."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "takes_extra_args", False):
        args.extra_args = list(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        return args.func(args)
    try:
        return args.func(args)
    except _user_errors() as e:
        if isinstance(e, OSError) and e.filename is not None and e.strerror:  # "[Errno 13] ..." reads badly
            raise SystemExit(f"{PROG}: {e.filename}: {e.strerror}") from None
        raise SystemExit(f"{PROG}: {_one_line(e)}") from None
    except Exception as e:
        raise SystemExit(f"{PROG}: unexpected {type(e).__name__}: {_one_line(e)} (set {TRACEBACK_ENV}=1 for the "
                         "traceback, and please report it)") from None
    except SystemExit as e:  # a message of a script the CLI runs (train): one line, under our name
        if isinstance(e.code, str):
            raise SystemExit(f"{PROG}: {_one_line(e)}") from None
        raise
