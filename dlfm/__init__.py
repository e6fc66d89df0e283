"""dlfm: experiment tracking and a model registry for a DeepLense foundation encoder."""

from pathlib import Path as _Path

from dlfm.code_trust import check_model_copy as _check_model_copy

__version__ = "0.1.0"

# A registered version's copy of dlfm (code/dlfm under its MLmodel) must equal the installed dlfm before any of it runs.
_check_model_copy(_Path(__file__).parent)
