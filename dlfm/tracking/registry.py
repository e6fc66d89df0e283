"""The ``dlfm-encoder`` registered model: versions, stage aliases and the promotion history.

Stages are aliases (MLflow 3 deprecates registry stages). MLflow keeps no history of alias
moves (mlflow issue #2169), so every promotion is also recorded as a run in the
``dlfm-promotions`` experiment: stage, version, previous version, time, user and reason.
"""

from __future__ import annotations

import contextlib
import getpass
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from dlfm.errors import RegistryError
from dlfm.redact import redact

MODEL_NAME = "dlfm-encoder"
STAGES = ("candidate", "staging", "production")
HISTORY_EXPERIMENT = "dlfm-promotions"
STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
PYFUNC_ARTIFACT = "encoder_model"
LOADER_MODULE = "dlfm.tracking.pyfunc_encoder"  # what every dlfm-made version's MLmodel names
PICKLE_SUFFIXES = (".pkl", ".pickle", ".cloudpickle", ".joblib")
VERSION_TAG_METRICS = ("val/accuracy", "val/macro_auc", "val/probe_macro_auc", "test/accuracy", "test/macro_auc",
                       "test/recon_mse_vs_mean_image", "test/masked_mse_vs_mean_image",
                       "test/masked_norm_mse_vs_mean_image", "test/masked_norm_mse_vs_position_mean")
# Ratios to a baseline that knows no image: the mean train image (pixel MSEs: < 1 draws each image), and for MAE's
# per-patch-normalised MSE the position-only predictor (1.0 = nothing learned beyond positions). Under per-patch
# normalisation the mean image is a poor baseline (about 10x worse than positions), so its ratio < 1 proves nothing.
LOWER_IS_BETTER = ("loss", "mse", "mae")
ONCE_TAG = "registered_for"  # version tag: what a once-only registration stands for (a tune study's best trial run)
# Label provenance, version tags (issue 28): what labels the encoder's weights were chosen with, so that an
# evaluation can say whether "pretrained" means "never saw a label".
LABEL_COUNT_TAG = "dlfm.label_count"  # labelled train images the training loss read (0: self-supervised)
LABEL_DIGEST_TAG = "dlfm.label_dataset_digest"  # the dataset those labels came from ("" when none)
LABEL_SELECTION_TAG = "dlfm.label_selection"  # which labels chose among epochs/trials: "none" or "<n> val labels"
PROBE_DIGEST_TAG = "dlfm.probe_dataset_digest"  # the labelled set the promotion probe scored (labels never in the weights)


def _objectives():
    from dlfm.objectives import OBJECTIVES

    return OBJECTIVES


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


@contextlib.contextmanager
def registry_lock():
    """Serialise alias moves and their history records between processes that share a SQLite store.

    Without it two promotions can interleave (A moves, B moves, B records, A records) and the
    history's last entry would disagree with the alias. A remote tracking server has no such
    lock: there the recorded previous version may race.
    """
    import fcntl

    import mlflow

    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri[len("sqlite:///"):].split("?")[0]).with_suffix(".registry.lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, even if the process dies
        yield


def check_stage_name(stage: str) -> str:
    """Stage names are lowercase aliases; the usual ones are candidate, staging, production."""
    if not STAGE_PATTERN.match(stage or "") or re.fullmatch(r"v\d+", stage or "") or stage == "latest":
        raise RegistryError(
            f"invalid stage {stage!r}: use a lowercase name such as {', '.join(STAGES)} "
            "(letters, digits, '-' or '_'; not 'latest' or 'v<number>')"
        )
    return stage


def versions_tagged(key: str, value: str) -> list[str]:
    """Version numbers of dlfm-encoder whose tag ``key`` is ``value``, lowest first."""
    found = _client().search_model_versions(f"name = '{MODEL_NAME}' and tags.`{key}` = '{value}'")
    return sorted((str(v.version) for v in found), key=int)


def label_tags(objective: str, labelled=None, selected_on_val: bool | None = None) -> dict[str, str]:
    """The label-provenance version tags of an encoder trained with ``objective``; ``labelled`` is the labelled dataset
    it trained on (classifying objectives) or was probed on (self-supervised ones), None when there was none.

    ``selected_on_val`` says whether val labels chose the best epoch (or trial); by default, whenever the
    objective's monitor is a classification metric.
    """
    from dlfm.objectives import OBJECTIVES

    spec = OBJECTIVES[objective]
    if selected_on_val is None:
        selected_on_val = spec.selects_on_labels
    n_val = len(labelled.indices("val")) if labelled is not None else 0
    tags = {LABEL_COUNT_TAG: "0", LABEL_DIGEST_TAG: "", LABEL_SELECTION_TAG: "none",
            PROBE_DIGEST_TAG: labelled.digest if labelled is not None else ""}
    if spec.classifies and labelled is None:
        tags[LABEL_COUNT_TAG] = "unknown"
    if spec.classifies and labelled is not None:
        tags.update({LABEL_COUNT_TAG: str(len(labelled.indices("train"))), LABEL_DIGEST_TAG: labelled.digest})
    if selected_on_val and labelled is not None:
        tags[LABEL_SELECTION_TAG] = f"{n_val} val labels"
    return tags


@dataclass(frozen=True)
class LabelProvenance:
    """What labels a registered version's weights were chosen with (read back from its tags)."""

    saw_labels: bool  # its training loss read labels, or labels chose its epoch or trial
    label_count: str  # labelled train images its loss read ("unknown" for a version registered before the tags)
    digests: tuple[str, ...]  # every dataset it trained on or was probed on: evaluate refuses to score on these
    selection: str  # "none" or "<n> val labels"
    objective: str

    def sentence(self, version: str) -> str:
        """The one line an evaluation opens with when the encoder saw labels."""
        chose = "" if self.selection == "none" else f", and {self.selection} chose its weights"
        return (f"**This encoder saw labels:** version {version} ({self.objective}) was trained on {self.label_count} "
                f"labelled images of dataset {next((d[:12] for d in self.digests if d), '?')}{chose}; "
                "its rows are a labelled upper bound, not label-free pretraining.")


def label_provenance(version: "VersionInfo") -> LabelProvenance:
    """The version's label provenance from its tags; a version registered before them falls back on its objective."""
    from dlfm.objectives import OBJECTIVES

    tags = version.tags
    objective = tags.get("objective", "?")
    digests = tuple(d for d in dict.fromkeys((tags.get("dataset_digest", ""), tags.get(LABEL_DIGEST_TAG, ""),
                                              tags.get(PROBE_DIGEST_TAG, ""))) if d)
    count, selection = tags.get(LABEL_COUNT_TAG), tags.get(LABEL_SELECTION_TAG, "none")
    if count is None:  # registered before the provenance tags: only the objective tells
        spec = OBJECTIVES.get(objective)
        classifies = spec.classifies if spec else objective == "tune"  # tune trains multitask
        return LabelProvenance(classifies, "unknown" if classifies else "0", digests, selection, objective)
    saw = not count.isdigit() or int(count) > 0 or selection != "none"
    return LabelProvenance(saw, count, digests, selection, objective)


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
    from mlflow.types import Schema, TensorSpec

    from dlfm.models.serialization import read_arch
    from dlfm.tracking.pyfunc_encoder import INPUT_DESCRIPTION, example_images
    from dlfm.tracking.runs import log_final_metrics

    arch = read_arch(encoder_dir)
    image_size, embed_dim, objective = arch["image_size"], arch["embed_dim"], arch["objective"]
    # Height and width are left free in the signature: MLflow's own shape check would answer a wrong size
    # with a dump of the whole array; the model's check answers with one line naming both shapes.
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, -1, -1), "images")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, embed_dim), "embedding")]),
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
        **(labels if labels is not None else label_tags(objective) if objective in _objectives() else {}),
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


@dataclass
class VersionInfo:
    version: str
    aliases: list[str]
    tags: dict[str, str]
    run_id: str
    created: float  # epoch seconds


def get_version(version: str) -> VersionInfo:
    """One version with its aliases (read with get_model_version: search results lack aliases on SQL stores)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = _client().get_model_version(MODEL_NAME, str(version))
    except MlflowException:
        raise RegistryError(f"{MODEL_NAME} has no version {version!r}; `dlfm registry list` shows the versions") from None
    return VersionInfo(str(mv.version), list(mv.aliases), dict(mv.tags), mv.run_id or mv.tags.get("source_run_id", ""),
                       mv.creation_timestamp / 1000)


def list_versions() -> list[VersionInfo]:
    """All versions of dlfm-encoder, newest first."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        found = client.search_model_versions(f"name='{MODEL_NAME}'")
    except MlflowException:
        return []
    return sorted((get_version(mv.version) for mv in found), key=lambda v: -int(v.version))


def version_for_stage(stage: str) -> str | None:
    """The version an alias points at now (also after a move by hand in the MLflow UI)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(MODEL_NAME, stage).version)
    except MlflowException:
        return None


def known_stages() -> list[str]:
    """Aliases currently set on dlfm-encoder."""
    from mlflow.exceptions import MlflowException

    try:
        return sorted(_client().get_registered_model(MODEL_NAME).aliases)
    except MlflowException:
        return []


def version_for_run(run_id: str) -> str:
    """The version a training run registered."""
    matches = [v for v in list_versions() if v.run_id == run_id or v.tags.get("source_run_id") == run_id]
    if not matches:
        raise RegistryError(f"run {run_id} registered no {MODEL_NAME} version; pass a version number, "
                            "see `dlfm registry list`")
    return matches[0].version


def version_metric(version: VersionInfo, metric: str) -> float | None:
    """A metric of the version's source run (falls back to the version tag)."""
    from mlflow.exceptions import MlflowException

    if version.run_id:
        try:
            value = _client().get_run(version.run_id).data.metrics.get(metric)
            if value is not None:
                return float(value)
        except MlflowException:
            pass
    tag = version.tags.get(metric)
    return float(tag) if tag not in (None, "") else None


@dataclass
class PromotionOutcome:
    promoted: bool
    stage: str
    version: str
    previous: str | None
    message: str


def promote(version: str, stage: str, if_better: str | None = None, reason: str = "") -> PromotionOutcome:
    """Point ``stage`` at ``version``; with ``if_better``, only when its metric beats the holder's.

    The comparison happens before anything changes, and the alias moves in one call, so a
    refused or failed promotion leaves every alias as it was.
    """
    from dlfm.tracking.runs import check_store_writable

    check_stage_name(stage)
    check_store_writable()
    candidate = get_version(version)
    check_dlfm_made(f"models:/{MODEL_NAME}/{candidate.version}")  # before anything moves
    with registry_lock():  # the comparison, the move and its record happen as one step
        return _promote_locked(candidate, stage, if_better, reason)


def _promote_locked(candidate: VersionInfo, stage: str, if_better: str | None, reason: str) -> PromotionOutcome:
    version = candidate.version
    previous = version_for_stage(stage)
    if if_better:
        new_value = version_metric(candidate, if_better)
        if new_value is None:
            raise RegistryError(f"version {version} has no metric {if_better!r}; pick a metric its run logged, "
                                "e.g. val/macro_auc")
        if previous is not None and previous != candidate.version:
            old_value = version_metric(get_version(previous), if_better)
            lower = any(word in if_better for word in LOWER_IS_BETTER)
            better = old_value is None or (new_value < old_value if lower else new_value > old_value)
            if not better:
                return PromotionOutcome(False, stage, candidate.version, previous,
                                        f"not promoted: version {candidate.version} {if_better}={new_value:.4f} does not beat "
                                        f"{stage} version {previous} ({old_value:.4f}); {stage} stays at version {previous}")
            reason = reason or f"{if_better} {new_value:.4f} beats {old_value:.4f}"
        else:
            reason = reason or f"{if_better} {new_value:.4f}; no previous holder"
    if previous == candidate.version:
        return PromotionOutcome(False, stage, candidate.version, previous,
                                f"version {candidate.version} already holds {stage}; nothing changed")
    with permission_needed(f"EDIT on registered model '{MODEL_NAME}' (moving the {stage!r} alias needs it)"):
        _client().set_registered_model_alias(MODEL_NAME, stage, candidate.version)
    with permission_needed(f"EDIT on experiment '{HISTORY_EXPERIMENT}' (where promotions are recorded; "
                           f"{stage!r} already moved to version {candidate.version})"):
        record_promotion(stage, candidate.version, previous, reason or "manual promotion")
    return PromotionOutcome(True, stage, candidate.version, previous,
                            f"promoted version {candidate.version} to {stage} (was {previous or 'unset'})")


@contextlib.contextmanager
def permission_needed(permission: str):
    """Turn a tracking server's 403 inside the block into one RegistryError line naming ``permission``."""
    import os

    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        if error.get_http_status_code() != 403 and error.error_code != "PERMISSION_DENIED":
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "(no MLFLOW_TRACKING_USERNAME)"
        raise RegistryError(f"the tracking server refused user {user!r} (403): it lacks {permission}; "
                            "ask an MLflow admin to grant it") from None


def promoting_user() -> str:
    """Who promotes: the MLflow login when there is one (what the server's permissions judge), and the OS user."""
    import os

    mlflow_user, os_user = os.environ.get("MLFLOW_TRACKING_USERNAME", ""), getpass.getuser()
    return f"{mlflow_user} (os: {os_user})" if mlflow_user and mlflow_user != os_user else (mlflow_user or os_user)


def record_promotion(stage: str, version: str, previous: str | None, reason: str) -> None:
    """One FINISHED run in the dlfm-promotions experiment per alias move."""
    client = _client()
    experiment = client.get_experiment_by_name(HISTORY_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else _create_experiment(HISTORY_EXPERIMENT)
    user = promoting_user()
    run = client.create_run(experiment_id, run_name=f"promote-v{version}-{stage}", tags={
        "dlfm.stage": "promote", "promotion.stage": stage, "promotion.version": version,
        "promotion.previous_version": previous or "", "promotion.user": user, "promotion.reason": redact(reason),
        "promotion.time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mlflow.user": user.split(" (os: ")[0],
    })
    client.set_terminated(run.info.run_id, "FINISHED")


def _create_experiment(name: str) -> str:
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        return client.create_experiment(name)
    except MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def promotion_history(stage: str | None = None) -> list[dict[str, str]]:
    """Recorded promotions, oldest first, optionally for one stage."""
    client = _client()
    experiment = client.get_experiment_by_name(HISTORY_EXPERIMENT)
    if experiment is None:
        return []
    filter_string = f"tags.`promotion.stage` = '{stage}'" if stage else ""
    runs = client.search_runs([experiment.experiment_id], filter_string=filter_string, order_by=["attributes.start_time ASC"],
                              max_results=5000)
    keys = ("time", "stage", "version", "previous_version", "user", "reason")
    return [{key: run.data.tags.get(f"promotion.{key}", "") for key in keys} for run in runs]


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


def check_dlfm_made(model_uri: str, model_dir: Path | None = None) -> None:
    """Refuse (one line) a registry version that dlfm did not make: no code runs from the registry."""
    if model_dir is None:
        with tempfile.TemporaryDirectory(prefix="dlfm-check-") as tmp:
            return check_dlfm_made(model_uri, _download(model_uri, Path(tmp)))
    why = _not_dlfm_made(model_dir)
    if why:
        raise RegistryError(f"{model_uri} is not a dlfm-made encoder ({why}), so dlfm will not promote or load it; "
                            "register encoders with a dlfm training stage and pick one of those versions")
    why = _carried_code_differs(model_dir)
    if why:
        raise RegistryError(f"{model_uri} carries dlfm code that is not the installed dlfm's ({why}), so dlfm will not "
                            "promote or load it (mlflow.pyfunc would run that code); pick a version registered by this "
                            "dlfm, or register the encoder again with it")


def _carried_code_differs(model_dir: Path) -> str | None:
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


def _load_registered(model_uri: str, load):
    """``load(encoder_dir)`` on a downloaded registry version that dlfm made (weights-only, never unpickling)."""
    from dlfm.models.serialization import ARCH_FILE

    with tempfile.TemporaryDirectory(prefix="dlfm-model-") as tmp:
        local = _download(model_uri, Path(tmp))
        if (local / "MLmodel").exists() or model_uri.startswith("models:/"):
            check_dlfm_made(model_uri, local)
        candidates = [p.parent for p in local.rglob(ARCH_FILE)]
        if not candidates:
            raise RegistryError(f"{model_uri} holds no dlfm encoder ({ARCH_FILE} missing); register one with a training stage")
        return load(candidates[0])  # in memory: the copy can go
