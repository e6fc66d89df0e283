"""``dlfm server``: a checked wrapper over ``mlflow server --app-name basic-auth`` (see README, Team server)."""

from __future__ import annotations


def add_parser(commands) -> None:
    """Register the ``server`` subcommand."""
    parser = commands.add_parser("server", help="run the team MLflow tracking server (PostgreSQL + S3 + basic auth)")
    parser.set_defaults(func=lambda args: (_ for _ in ()).throw(NotImplementedError("dlfm server is not built yet")))
