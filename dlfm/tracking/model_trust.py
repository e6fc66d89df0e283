"""Loading a registered encoder safely: resolving its URI, refusing versions dlfm did not make, weights-only loads.

No code runs from the registry: a version whose MLmodel names another loader, holds pickles, or carries
code that differs from the installed dlfm is refused with one line.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path

from dlfm.errors import RegistryError
from dlfm.tracking.model_versions import (LOADER_MODULE, MODEL_NAME, PICKLE_SUFFIXES, VersionInfo, check_stage_name,
                                          get_version, known_stages, version_for_stage)


def resolve_encoder_uri(stage: str | None = None, uri: str | None = None) -> tuple[str, VersionInfo | None]:
    """``models:/dlfm-encoder@<stage>`` (or ``uri``) → the URI and, for registry URIs, its version."""
    if uri:
        match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([\w-]+))", uri)
        if not match:
            return uri, None
        name, number, alias = match.groups()
        if name != MODEL_NAME:
            return uri, None
        stage = alias
        if number:
            return uri, get_version(number)
    check_stage_name(stage)
    version = version_for_stage(stage)
    if version is None:
        existing = known_stages()
        raise RegistryError(
            f"no {MODEL_NAME} version holds stage {stage!r}; existing stages: {', '.join(existing) or 'none'} "
            f"(promote one with `dlfm registry promote VERSION --stage {stage}`)"
        )
    return f"models:/{MODEL_NAME}@{stage}", get_version(version)


def _not_dlfm_made(model_dir: Path) -> str | None:
    """Why a downloaded model directory is not a dlfm encoder (None when it is one).

    A dlfm version's MLmodel has only the python_function flavor, whose loader_module is dlfm's
    own (weights-only) loader; a ``python_model`` entry or any pickle file means loading it with
    ``mlflow.pyfunc.load_model`` would unpickle, i.e. run, someone else's code.
    """
    import yaml

    try:
        mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text()) or {}
        flavors = mlmodel.get("flavors") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return "it has no readable MLmodel file"
    pyfunc = flavors.get("python_function") or {}
    if set(flavors) != {"python_function"}:
        return f"its flavors are {sorted(flavors)}, not dlfm's python_function alone"
    if "python_model" in pyfunc or "cloudpickle_version" in pyfunc:
        return "it holds a pickled python_model"
    if pyfunc.get("loader_module") != LOADER_MODULE:
        return f"its loader_module is {pyfunc.get('loader_module')!r}, not {LOADER_MODULE!r}"
    pickles = sorted(p.name for p in model_dir.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        return f"it holds pickle files ({', '.join(pickles[:3])})"
    return None


def check_dlfm_made(model_uri: str, model_dir: Path | None = None, same_code: bool = True) -> None:
    """Refuse (one line) a registry version that dlfm did not make: no code runs from the registry.
    ``same_code``: also one whose carried code is not the installed dlfm's."""
    if model_dir is None:
        with tempfile.TemporaryDirectory(prefix="dlfm-check-") as tmp:
            return check_dlfm_made(model_uri, _download(model_uri, Path(tmp)), same_code)
    why = _not_dlfm_made(model_dir)
    if why:
        raise RegistryError(f"{model_uri} is not a dlfm-made encoder ({why}), so dlfm will not promote or load it; "
                            "register encoders with a dlfm training stage and pick one of those versions")
    why = carried_code_difference(model_dir) if same_code else None
    if why:
        raise RegistryError(f"{model_uri} carries dlfm code that is not the installed dlfm's ({why}), so dlfm will not "
                            "promote or load it (mlflow.pyfunc would run that code); pick a version registered by this "
                            "dlfm, or register its weights again with this dlfm's code: dlfm registry adopt VERSION")


def carried_code_difference(model_dir: Path) -> str | None:
    """Why the code a version carries (its pyfunc ``code_paths``) is not the installed dlfm, file by file (None: it is)."""
    import yaml

    from dlfm.code_trust import first_difference

    pyfunc = (yaml.safe_load((model_dir / "MLmodel").read_text()) or {}).get("flavors", {}).get("python_function", {})
    if not pyfunc.get("code"):
        return None  # nothing carried: mlflow.pyfunc imports the installed dlfm's loader
    code = model_dir / pyfunc["code"]
    extra = sorted(p.name for p in code.iterdir() if p.name != "dlfm") if code.is_dir() else []
    if extra or not (code / "dlfm").is_dir():
        return f"its code directory holds {', '.join(extra[:3]) or 'no dlfm package'}"
    return first_difference(code / "dlfm", Path(__file__).resolve().parents[1])


def _download(model_uri: str, destination: Path) -> Path:
    """A copy of the model's files. Always into a folder of ours: without ``dst_path`` a local store's
    files come back in place, and MLflow then writes its ``registered_model_meta`` into the store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(destination)))
    except MlflowException as error:
        raise RegistryError(f"cannot download {model_uri}: {str(error).splitlines()[0]}") from None


def load_registered_encoder(model_uri: str):
    """Download a registered encoder, check dlfm made it, and load it weights-only (never unpickling)."""
    from dlfm.models.serialization import load_encoder

    return _load_registered(model_uri, load_encoder)


def load_registered_reconstructor(model_uri: str):
    """The registered encoder with its decoder (a head-less ``LensModel``), or None when the version holds no decoder."""
    from dlfm.models.serialization import load_reconstructor

    return _load_registered(model_uri, load_reconstructor)


def load_registered_weights(model_uri: str):
    """The registered encoder for reading numbers off it, whichever dlfm registered it: weights-only through the
    installed dlfm's loader, after the same made-by-dlfm check (flavor, loader, no pickles) but without requiring its
    carried code to be the installed dlfm's. That code is never imported here, and the version is not promoted,
    served or evaluated through this call: ``main``'s gate scores a holder registered by an older dlfm with it."""
    from dlfm.models.serialization import load_encoder

    return _load_registered(model_uri, load_encoder, same_code=False)


def _load_registered(model_uri: str, load, same_code: bool = True):
    """``load(encoder_dir)`` on a downloaded registry version that dlfm made (weights-only, never unpickling);
    ``same_code``: and whose carried code is the installed dlfm's."""
    with downloaded_encoder(model_uri, same_code) as (_, encoder_dir):
        return load(encoder_dir)  # in memory: the copy can go


@contextlib.contextmanager
def downloaded_encoder(model_uri: str, same_code: bool = True):
    """(the version's downloaded folder, its encoder directory) in a temporary folder, removed after the block, once
    the version passed ``check_dlfm_made`` (``same_code``: its carried code must be the installed dlfm's too)."""
    from dlfm.models.serialization import ARCH_FILE

    with tempfile.TemporaryDirectory(prefix="dlfm-model-") as tmp:
        local = _download(model_uri, Path(tmp))
        if (local / "MLmodel").exists() or model_uri.startswith("models:/"):
            check_dlfm_made(model_uri, local, same_code)
        candidates = [p.parent for p in local.rglob(ARCH_FILE)]
        if not candidates:
            raise RegistryError(f"{model_uri} holds no dlfm encoder ({ARCH_FILE} missing); register one with a training stage")
        yield local, candidates[0]
