"""Tests for eventgw.cli.main: every subcommand names the command it runs."""

from __future__ import annotations

import argparse
import importlib

from eventgw.cli.main import LazyCommand, build_parser


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_subcommand_sets_a_command_that_exists() -> None:
    subcommands = _subcommands()
    assert {"up", "ingest", "orchestrator", "processor", "dlq", "replay"} <= set(subcommands)
    for name, parser in subcommands.items():
        func = parser.get_default("func")
        assert callable(func), f"eventgw {name}: no set_defaults(func=...)"
        if isinstance(func, LazyCommand):
            module = importlib.import_module(func.module)
            assert callable(getattr(module, func.name, None)), f"eventgw {name}: {func}"


def test_a_subcommand_runs_its_own_command() -> None:
    args = build_parser().parse_args(["keys", "new", "--tenant", "t", "--company", "c"])
    assert args.func == LazyCommand("eventgw.cli.tools", "cmd_keys")
    args = build_parser().parse_args(["orchestrator", "--index", "1"])
    assert args.func.__name__ == "_cmd_orchestrator"
