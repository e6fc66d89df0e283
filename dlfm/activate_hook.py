"""Make the venv's ``activate`` point plain ``mlflow run`` at the project's tracking store.

With ``MLFLOW_TRACKING_URI`` unset, MLflow files an ``mlflow run`` in its own default (``./mlflow.db``),
not in ``mlruns/mlflow.db``, the store of ``make demo``, ``dlfm`` and the README's ``mlflow ui`` command.
``make venv`` calls this once; it adds to ``<venv>/bin/activate`` (bash/zsh) an export of the project's
store, absolute so it holds from any directory, set only when the shell has no ``MLFLOW_TRACKING_URI``
of its own, and unset again by ``deactivate``. Likewise ``MLFLOW_EXPERIMENT_NAME=deeplense-fm`` when the shell
names no experiment (neither ``MLFLOW_EXPERIMENT_NAME`` nor ``MLFLOW_EXPERIMENT_ID``): ``mlflow run`` picks its
experiment before any dlfm code runs, so without it a plain ``mlflow run`` files under MLflow's ``Default``,
apart from ``make demo``'s runs. Rerunning it replaces its own lines, nothing else.

    python -m dlfm.activate_hook .venv .        # <venv> <project root>
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from dlfm.constants import DEFAULT_EXPERIMENT

BEGIN = "# >>> dlfm: the project's tracking store (python -m dlfm.activate_hook, run by make venv) >>>"
END = "# <<< dlfm <<<"
SET_FLAG = "_DLFM_SET_TRACKING_URI"  # set when activate set the URI, so deactivate unsets only its own value
EXPERIMENT_FLAG = "_DLFM_SET_EXPERIMENT_NAME"  # likewise for the experiment name
DEACTIVATE = "deactivate () {"  # how python -m venv's activate opens its deactivate function


def project_store_uri(project: Path) -> str:
    """``sqlite:///`` + the absolute path of the project's ``mlruns/mlflow.db``."""
    return f"sqlite:///{(Path(project).resolve() / 'mlruns' / 'mlflow.db')}"


def hook_lines(project: Path) -> tuple[str, str]:
    """(the block appended to activate, the lines put first in deactivate)."""
    uri = shlex.quote(project_store_uri(project))
    export = (f"{BEGIN}\n"
              f'if [ -z "${{MLFLOW_TRACKING_URI:-}}" ] ; then\n'
              f"    MLFLOW_TRACKING_URI={uri}\n"
              f"    export MLFLOW_TRACKING_URI\n"
              f"    {SET_FLAG}=1\n"
              f"fi\n"
              f'if [ -z "${{MLFLOW_EXPERIMENT_NAME:-}}" ] && [ -z "${{MLFLOW_EXPERIMENT_ID:-}}" ] ; then\n'
              f"    MLFLOW_EXPERIMENT_NAME={shlex.quote(DEFAULT_EXPERIMENT)}\n"
              f"    export MLFLOW_EXPERIMENT_NAME\n"
              f"    {EXPERIMENT_FLAG}=1\n"
              f"fi\n"
              f"{END}\n")
    unset = (f"    {BEGIN}\n"
             f'    if [ -n "${{{SET_FLAG}:-}}" ] ; then unset MLFLOW_TRACKING_URI {SET_FLAG} ; fi\n'
             f'    if [ -n "${{{EXPERIMENT_FLAG}:-}}" ] ; then unset MLFLOW_EXPERIMENT_NAME {EXPERIMENT_FLAG} ; fi\n'
             f"    {END}\n")
    return export, unset


def without_hook(text: str) -> str:
    """``text`` with every block this module wrote removed."""
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.strip() == BEGIN:
            inside = True
        elif inside and line.strip() == END:
            inside = False
        elif not inside:
            kept.append(line)
    return "".join(kept)


def install(venv: Path, project: Path) -> Path:
    """Write the hook into ``<venv>/bin/activate`` (idempotent); return the script's path."""
    activate = Path(venv) / "bin" / "activate"
    text = without_hook(activate.read_text())
    if DEACTIVATE not in text:
        raise SystemExit(f"dlfm: error: {activate} has no `{DEACTIVATE}` line; is it python -m venv's activate script?")
    export, unset = hook_lines(project)
    text = text.replace(DEACTIVATE + "\n", DEACTIVATE + "\n" + unset, 1)
    activate.write_text(text.rstrip("\n") + "\n\n" + export)
    return activate


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m dlfm.activate_hook <venv> <project root>")
    print(f"dlfm: {install(Path(sys.argv[1]), Path(sys.argv[2]))} now sets MLFLOW_TRACKING_URI={project_store_uri(Path(sys.argv[2]))} "
          f"and MLFLOW_EXPERIMENT_NAME={DEFAULT_EXPERIMENT} when unset")
