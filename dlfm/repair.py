"""``dlfm runs repair``: mark runs left RUNNING by dead processes as FAILED."""

from __future__ import annotations


def add_parser(commands) -> None:
    """Register the ``runs`` subcommand group."""
    parser = commands.add_parser("runs", help="maintenance of tracked runs")
    parser.set_defaults(func=lambda args: (_ for _ in ()).throw(NotImplementedError("dlfm runs repair is not built yet")))
