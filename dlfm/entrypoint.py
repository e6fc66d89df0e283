"""What every entry-point script shares: params parsed into a frozen config, and one-line errors."""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import functools
import inspect
import io
import os
import re
import signal
import sys
import textwrap
import tokenize
from typing import Callable

from dlfm.errors import ConfigError, DlfmError
from dlfm.redact import RedactingStream, scrub
from dlfm.params import parse_bool  # noqa: F401 - callers and tests read it here too


class ParamParser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one line) instead of printing usage and exiting."""

    def error(self, message: str):
        raise ConfigError(f"{message}; see --help for the params")


def typed(name: str, kind: type) -> Callable[[str], object]:
    def convert(text: str):
        try:
            if kind is bool:
                return parse_bool(text)
            return kind(text)
        except ValueError:
            kind_name = {int: "an integer", float: "a number", bool: "true or false"}.get(kind, kind.__name__)
            raise ConfigError(f"{name} must be {kind_name}, got {text!r}") from None

    return convert


@functools.lru_cache(maxsize=None)
def field_help(config_class) -> dict[str, str]:
    """{field: its meaning and unit}, read from the comments on and above each field of the dataclass.

    The comments are the one home of a param's description (STYLE: each field's comment gives its
    meaning and unit); ``--help`` and MLproject both show them. A ``*_val``/``*_test`` field without a
    comment of its own shares its ``*_train`` sibling's (``sim_n_val`` is described by ``sim_n_train``).
    """
    source = textwrap.dedent(inspect.getsource(config_class))
    lines = source.splitlines()
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}
    found = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, row = [], node.lineno - 1
        while row in comments and lines[row - 1].lstrip().startswith("#"):  # a block of comment-only lines above
            above.insert(0, comments[row])
            row -= 1
        text = " ".join(above + ([comments[node.end_lineno]] if node.end_lineno in comments else []))
        sibling = re.sub(r"_(val|test)$", "_train", node.target.id)
        found[node.target.id] = text or (found.get(sibling, "") if sibling != node.target.id else "")
    return found


def add_config_params(parser: argparse.ArgumentParser, config_class, exclude: tuple[str, ...] = ()) -> None:
    """One ``--field`` option per dataclass field, typed from its default, its help from the field's comment."""
    described = field_help(config_class)
    for field in dataclasses.fields(config_class):
        if field.name in exclude or field.default is dataclasses.MISSING:
            continue
        kind = type(field.default)
        meaning = described.get(field.name, "").replace("%", "%%")  # argparse formats help with %
        parser.add_argument(f"--{field.name}", type=typed(field.name, kind), default=field.default,
                            metavar=kind.__name__.upper(), help=f"{meaning} (default: {format_default(field.default) or '(empty)'})")


def format_default(value) -> str:
    """A default as the string MLflow passes on (booleans as the scripts' true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def config_from_args(config_class, args: argparse.Namespace, **fixed):
    """Build the frozen config from parsed args plus fixed fields (e.g. the objective)."""
    names = {f.name for f in dataclasses.fields(config_class)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return config_class(**{**values, **fixed})


def run_entry_point(main: Callable[[], object]) -> None:
    """Run ``main``; a user error prints one line, marks a pending MLflow run FAILED and exits 2.

    SIGTERM is turned into KeyboardInterrupt (as Ctrl-C is), so runs end KILLED rather than
    staying RUNNING; an interruption prints one line (with the resume command when there is
    one) and exits 128 + the signal number. Under ``mlflow run`` the launcher's death is a SIGTERM too.
    """
    from dlfm.tracking import fail_pending_run
    from dlfm.signals import sigterm_raises_keyboard_interrupt, stop_when_parent_dies

    sigterm_raises_keyboard_interrupt()
    stop_when_parent_dies()
    # every log line goes through the one redactor (tqdm, warnings and libraries included), not only dlfm's own
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    launched_run = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`; MLflow unsets it when the run ends
    try:
        main()
    except DlfmError as error:
        message = scrub(str(error).splitlines()[0])  # the last line of defence: no secret reaches the terminal
        print(f"dlfm: error: {message}", file=sys.stderr)
        fail_pending_run(message)
        sys.exit(2)
    except KeyboardInterrupt as error:
        # The stop is being handled: a straggler SIGTERM (the launcher's death signal, a scheduler's repeat) must
        # neither cut the cleanup below (the run left RUNNING, SQLite's lock held) nor kill the exit with -15.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        from dlfm.tracking.runs import pending_resume_hint

        hint = getattr(error, "hint", "") or pending_resume_hint()
        detail = f": {error}" if str(error) else ""
        print(f"dlfm: interrupted{detail}" + (f"; resume with: {hint}" if hint else ""), file=sys.stderr)
        fail_pending_run("interrupted before the run started", status="KILLED")
        with contextlib.suppress(Exception):  # best effort: the run is KILLED now; only MLflow's launcher could undo it
            from dlfm.tracking.status_guard import guard_final_status

            guard_final_status(launched_run)
        sys.exit(128 + getattr(error, "signal_number", signal.SIGINT))
