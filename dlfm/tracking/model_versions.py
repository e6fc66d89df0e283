"""The ``dlfm-encoder`` registered model's names, tags and version lookups (the registry's shared ground).

Its constants (model name, stages, tag names), the label-provenance tags, ``VersionInfo`` and the
reads of versions and aliases, and the lock that serialises alias moves on a SQLite store.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from dlfm.errors import RegistryError
from dlfm.objectives import OBJECTIVES

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
PROBE_METHOD_TAG = "dlfm.probe_method"  # the probe behind val/probe_… (dlfm.training.probe.PROBE_METHOD); absent: older


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
    spec = OBJECTIVES[objective]
    if selected_on_val is None:
        selected_on_val = spec.selects_on_labels
    n_val = len(labelled.indices("val")) if labelled is not None else 0
    from dlfm.training.probe import PROBE_METHOD

    tags = {LABEL_COUNT_TAG: "0", LABEL_DIGEST_TAG: "", LABEL_SELECTION_TAG: "none",
            PROBE_DIGEST_TAG: labelled.digest if labelled is not None else "",
            PROBE_METHOD_TAG: PROBE_METHOD if labelled is not None else ""}
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


def probe_mismatch(candidate: VersionInfo, holder: VersionInfo, metric: str) -> str:
    """Why a probe ``metric`` (val/probe_…) of the two versions is not one quantity: their probes scored different
    labelled sets, or ran different methods. "" when it is one quantity, or when it is no probe metric.

    A version registered before a tag cannot show it matches: an unrecorded method differs from a recorded one
    (the stages' probe changed, from C = 1 to evaluate's, without a tag); an unrecorded probe set is not compared.
    """
    if "probe" not in metric:
        return ""
    theirs, ours = holder.tags.get(PROBE_DIGEST_TAG, ""), candidate.tags.get(PROBE_DIGEST_TAG, "")
    if theirs and ours and theirs != ours:
        return (f"version {holder.version}'s {metric} was measured on probe set {theirs[:12]}, "
                f"version {candidate.version}'s on {ours[:12]}")
    theirs, ours = holder.tags.get(PROBE_METHOD_TAG, ""), candidate.tags.get(PROBE_METHOD_TAG, "")
    if theirs != ours:
        unrecorded = "a probe it did not record (registered before the dlfm.probe_method tag)"
        return (f"version {holder.version}'s {metric} came from {theirs or unrecorded}, "
                f"version {candidate.version}'s from {ours or unrecorded}")
    return ""


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

