"""Command line: ``autoprune search | report | export | targets | profile | calibrate | board``.

A thin layer over the library: it parses arguments (:mod:`._parser`), configures logging and
output, hands typed option values to the package, and turns
:class:`~autoprune.errors.AutopruneError` into one line on stderr and exit status 2 (a traceback
only with ``--debug``). Each subcommand lives in its own module, imported only when that
subcommand runs, so that ``autoprune --help`` and ``targets`` do not load the search stack.
"FLOPs" means multiply-accumulates everywhere (torchvision's convention: ResNet-50 at 224x224 =
4.09 GFLOPs).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from autoprune.cli._parser import build_parser
from autoprune.errors import AutopruneError

__all__ = ["main"]

#: Subcommand -> ``module:function`` that runs it (``function(args) -> exit status``).
_COMMANDS = {
    "search": "autoprune.cli._search:search_command",
    "report": "autoprune.cli._results:report_command",
    "export": "autoprune.cli._results:export_command",
    "targets": "autoprune.cli._devices:targets_command",
    "profile": "autoprune.cli._devices:profile_command",
    "board": "autoprune.cli._devices:board_command",
    "calibrate": "autoprune.cli._calibrate:calibrate_command",
}


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    module, _, function = _COMMANDS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def _configure_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("autoprune: %(message)s"))
    root = logging.getLogger("autoprune")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def _attach_dash_values(argv: list[str]) -> list[str]:
    """``--budget -1ms`` -> ``--budget=-1ms``, so that the budget parser, not argparse, explains
    what is wrong with a value that starts with a dash."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] in ("--budget", "--set") and arg.startswith("-") and out:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``autoprune`` console script; returns the exit status."""
    argv = _attach_dash_values(list(sys.argv[1:] if argv is None else argv))
    search_help = bool(argv) and argv[0] == "search" and ("-h" in argv or "--help" in argv)
    debug = "--debug" in argv
    try:
        args = build_parser(list_registries=search_help).parse_args(argv)
        args.argv = argv
        _configure_logging(getattr(args, "quiet", False))
        return _command(args.command)(args)
    except AutopruneError as exc:
        if debug:
            raise
        message = " ".join(str(exc).splitlines())  # one line, whatever the message holds
        print(f"autoprune: error: {message}", file=sys.stderr)
        return 2
