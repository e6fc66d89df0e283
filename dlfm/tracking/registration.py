"""Registering an encoder as a ``dlfm-encoder`` version: the pyfunc model, its tags and the ``candidate`` alias."""

from __future__ import annotations

import tempfile
from pathlib import Path

from dlfm.objectives import OBJECTIVES
from dlfm.redact import redact
from dlfm.tracking.model_versions import (LOADER_MODULE, MODEL_NAME, ONCE_TAG, STAGES, VERSION_TAG_METRICS, _client,
                                          label_tags, registry_lock, version_for_stage, versions_tagged)


def register_encoder_version(encoder, image_size: int, objective: str, metrics: dict[str, float], dataset_digest: str,
                             run_id: str, once_for: str = "", decoder=None, masking: dict | None = None,
                             labels: dict[str, str] | None = None) -> str:
    """Save ``encoder`` (and its ``decoder``) in the encoder artifact format and register it (see ``register_encoder_dir``)."""
    from dlfm.models.serialization import save_encoder

    with tempfile.TemporaryDirectory() as tmp:
        encoder_dir = save_encoder(encoder, Path(tmp) / "encoder", image_size=image_size, objective=objective,
                                   decoder=decoder, masking=masking)
        return register_encoder_dir(encoder_dir, metrics, dataset_digest, run_id, once_for=once_for, labels=labels)


def logged_model_name(stage: str) -> str:
    """The MLflow logged-model name of a stage's encoder (``encoder-multitask``, ``encoder-tune``, …)."""
    return f"encoder-{stage}"


def package_code(tmp: Path) -> Path:
    """A copy of the ``dlfm`` package's .py files (no caches): the model's ``code_paths``.

    With it the pyfunc loader imports without a dlfm install, so ``mlflow models serve`` works from any
    directory; the copy travels with the model version and stays the code that made it.
    """
    import shutil

    source = Path(__file__).resolve().parents[1]
    target = tmp / "dlfm"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def register_encoder_dir(encoder_dir: str | Path, metrics: dict[str, float], dataset_digest: str, run_id: str,
                         once_for: str = "", stage: str | None = None, labels: dict[str, str] | None = None) -> str:
    """Log a saved encoder directory as a pyfunc model in the active run, register it, alias it ``candidate``.

    Its ``arch.json`` supplies the image size, objective, architecture and embedding width, so an
    encoder another run already saved (a tune trial's ``encoder/``) is registered as it is, without
    loading and saving it again. The logged model is named ``encoder-<stage>`` (default: its
    objective), and ``metrics`` (the best weights' val/… and test/…) are logged on the run once,
    linked to it, so ``mlflow.search_logged_models`` and the Models tab rank encoders.

    ``once_for`` names what the encoder is (e.g. a tune study's best trial run): it is registered
    only once, however many processes register it. A process that finds it registered reuses that
    version; two that race both register, then the later (higher) version deletes itself.
    ``labels`` are its label-provenance tags (``label_tags``); without them the objective's own (no dataset known).
    """
    if once_for and (existing := versions_tagged(ONCE_TAG, once_for)):
        return existing[0]
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    from dlfm.models.serialization import read_arch
    from dlfm.tracking.pyfunc_encoder import INPUT_DESCRIPTION, PIXEL_SCALE_PARAM, example_images
    from dlfm.tracking.run_logs import log_final_metrics

    arch = read_arch(encoder_dir)
    image_size, embed_dim, objective = arch["image_size"], arch["embed_dim"], arch["objective"]
    # Height and width are left free in the signature: MLflow's own shape check would answer a wrong size
    # with a dump of the whole array; the model's check answers with one line naming both shapes.
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, -1, -1), "images")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, embed_dim), "embedding")]),
        # the images' arcsec per pixel: an encoder pretrained at a pixel_scale resamples them to its grid (0: as given)
        params=ParamSchema([ParamSpec(PIXEL_SCALE_PARAM, "double", 0.0)]),
    )
    import torch

    torch_version = torch.__version__.split("+")[0]
    # dlfm itself travels as code_paths; numpy and pandas are what its loader imports besides torch.
    requirements = [f"torch=={torch_version}", f"mlflow=={mlflow.__version__}", "numpy", "pandas"]
    input_text = INPUT_DESCRIPTION.format(size=image_size)
    with tempfile.TemporaryDirectory() as tmp:
        info = mlflow.pyfunc.log_model(
            name=logged_model_name(stage or objective), loader_module=LOADER_MODULE, data_path=str(encoder_dir),
            code_paths=[str(package_code(Path(tmp)))], signature=signature, pip_requirements=requirements,
            input_example=example_images(image_size), tags={"dlfm.objective": objective, "dlfm.input": input_text},
        )
    log_final_metrics(metrics, model_id=info.model_id)
    tags = {
        "objective": objective, "encoder": arch.get("name", "?"), "dataset_digest": dataset_digest,
        "source_run_id": run_id, "image_size": str(image_size), "embed_dim": str(embed_dim),
        **{name: f"{metrics[name]:.6f}" for name in VERSION_TAG_METRICS if name in metrics},
        **({ONCE_TAG: once_for} if once_for else {}),
        **(labels if labels is not None else label_tags(objective) if objective in OBJECTIVES else {}),
    }
    description = (
        f"{objective} encoder ({arch.get('name', '?')}, embed_dim {embed_dim}, {image_size}px input) "
        f"from run {run_id}, dataset {dataset_digest[:12]}; "
        + ", ".join(f"{k} {float(v):.4f}" for k, v in tags.items() if "/" in k)
        + f".\n\nInput: {input_text}. Output: embedding (N, {embed_dim}) float32."
    )
    version = mlflow.register_model(info.model_uri, MODEL_NAME, tags=tags)
    client = _client()
    if once_for and (first := versions_tagged(ONCE_TAG, once_for)[0]) != str(version.version):
        client.delete_model_version(MODEL_NAME, version.version)  # dlfm made it a moment ago; the earlier one stands
        return first
    client.update_model_version(MODEL_NAME, version.version, description=redact(description))
    describe_registered_model()
    with registry_lock():
        holder = version_for_stage("candidate")
        if holder is None or int(holder) < int(version.version):  # a concurrent, newer version keeps it
            client.set_registered_model_alias(MODEL_NAME, "candidate", version.version)
    return str(version.version)


MODEL_DESCRIPTION = (
    "Encoders of DeepLense strong-lensing images (dark-matter substructure: no_sub, cdm, axion), one version "
    "per dlfm training run. Aliases are stages: candidate (newest), staging, production (promoted by "
    "`dlfm registry promote`, gated on val/macro_auc; history in the dlfm-promotions experiment). Input: raw "
    "flux images (N, 1, S, S) float32, min-max normalised inside the model; output: embeddings (N, embed_dim). "
    "Serve: mlflow models serve -m models:/dlfm-encoder@production --env-manager local"
)


def describe_registered_model() -> None:
    """Give ``dlfm-encoder`` its description and tags (set once; a description edited in the UI is kept).

    Two registering processes may both find a tag missing; the one that loses the insert finds
    the other's identical value and goes on.
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    model = client.get_registered_model(MODEL_NAME)
    if not model.description:
        client.update_registered_model(MODEL_NAME, description=MODEL_DESCRIPTION)
    for key, value in {"project": "dlfm", "task": "image embedding", "domain": "strong gravitational lensing",
                       "stages": ",".join(STAGES)}.items():
        if model.tags.get(key) == value:
            continue
        try:
            client.set_registered_model_tag(MODEL_NAME, key, value)
        except MlflowException:
            if client.get_registered_model(MODEL_NAME).tags.get(key) != value:
                raise
