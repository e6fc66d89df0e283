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


def param_from_string(default, text: str):
    """A param string (as MLflow returns it) back in the type of its field's default; ValueError if it is not."""
    if isinstance(default, bool):
        return parse_bool(text)
    if isinstance(default, str) and text in ("''", '""'):
        return ""  # `mlflow run` stores an empty -P value as the shell's quoted empty string
    return type(default)(text)
