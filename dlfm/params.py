"""MLflow params back to Python values: MLflow stores and returns every param as a string.

A leaf module: the entry points' argparse types, a resume's typed config (training, evaluate) all read it.
"""

from __future__ import annotations


def parse_bool(text: str) -> bool:
    """true/false, yes/no, 1/0 (MLflow passes params as strings)."""
    lowered = str(text).strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError(text)


def param_as_given(stored: str) -> str:
    """A param as the entry point received it. `mlflow run` logs each -P value as it enters the shell command,
    ``shlex.quote``-d: an empty value is stored as ``''``, a path with a space as ``'/data/my lenses'``."""
    import shlex

    if stored == '""':
        return ""
    try:
        words = shlex.split(stored)
    except ValueError:  # an unbalanced quote: no quoting of mlflow's
        return stored
    return words[0] if len(words) == 1 and shlex.quote(words[0]) == stored else stored


def param_from_string(default, text: str):
    """A param string (as MLflow returns it) back in the type of its field's default; ValueError if it is not."""
    text = param_as_given(text)
    if isinstance(default, bool):
        return parse_bool(text)
    return type(default)(text)
