"""Sub-commands registered lazily: a table of name -> help line and where the command's arguments
are registered. Every name is listed (so `--help` shows them all), but only the command being
run has its module imported and its arguments added: `annrec stack up` never loads the builder,
the worker or numpy.

A command's register function (`"package.module:function"`) takes the command's own parser, adds
its arguments and sets `handler`, the function `main` calls with the parsed arguments.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Handler = Callable[[argparse.Namespace], int]
Register = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    help: str
    register: str  # "package.module:function", a Register


@dataclass(frozen=True)
class Group:
    """A command with sub-commands of its own (`annrec bench <kind>`), registered the same way."""

    help: str
    dest: str  # the attribute that names the chosen sub-command
    commands: str  # "package.module:NAME" of a Mapping[str, Command | Group]


Table = Mapping[str, Command | Group]


def add_subcommands(
    parser: argparse.ArgumentParser, dest: str, table: Table, argv: Sequence[str] | None
) -> None:
    """Every command of `table` on `parser`; the arguments of the one `argv` names only, or of all
    of them when argv is None (tests, documentation)."""
    sub = parser.add_subparsers(dest=dest, required=True)
    chosen, rest = (None, None) if argv is None else _chosen(parser, argv, table)
    for name, command in table.items():
        command_parser = sub.add_parser(name, help=command.help)
        if argv is None or name == chosen:
            _register(command_parser, command, rest)


def _register(
    parser: argparse.ArgumentParser, command: Command | Group, argv: Sequence[str] | None
) -> None:
    if isinstance(command, Group):
        add_subcommands(parser, command.dest, _load(command.commands), argv)
    else:
        register: Register = _load(command.register)
        register(parser)


def _chosen(
    parser: argparse.ArgumentParser, argv: Sequence[str], table: Table
) -> tuple[str | None, list[str]]:
    """The command argv names (its first word that is a command and not an option's value) and
    the words after it; None when it names none (`--help`, a typo: argparse then says so)."""
    takes_value = {s for a in parser._actions if a.nargs != 0 for s in a.option_strings}
    after_option = False
    for i, word in enumerate(argv):
        if not after_option and word in table:
            return word, list(argv[i + 1 :])
        after_option = word in takes_value
    return None, []


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
