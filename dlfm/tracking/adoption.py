"""Adopting a version that an older dlfm registered: its weights, registered again with the installed dlfm's code.

Every version carries the dlfm code that registered it, and promote, evaluate, transfer, anomaly and
``mlflow models serve`` refuse a version whose carried code is not the installed dlfm's (``model_trust``). After
an upgrade (a ``git pull``) that is every earlier version. ``adopt`` is the way forward that keeps them:

- the old version is checked to be dlfm-made (flavor, loader, no pickles), and only its ``arch.json`` and its
  weights are read, weights-only through the installed loader; its carried code is never imported;
- the weights must load into the installed dlfm's architecture (encoder, and decoder when it has one);
- they are registered as a new version from a new ``adopt`` run, carrying the installed code. The run and the
  version say where they came from (``dlfm.adopted_from_version``, ``dlfm.adopted_from_run``) and keep the
  old version's label-provenance tags; the run logs the val/test numbers the old source run logged, which the
  older code measured. The old version is left as it was.

Adopting the same version again with the same installed code gives the same new version (``ONCE_TAG``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dlfm.errors import DlfmError, RegistryError
from dlfm.redact import redact
from dlfm.tracking.model_trust import carried_code_difference, downloaded_encoder
from dlfm.tracking.model_versions import (LABEL_COUNT_TAG, LABEL_DIGEST_TAG, LABEL_SELECTION_TAG, MODEL_NAME, ONCE_TAG,
                                          PROBE_DIGEST_TAG, PROBE_METHOD_TAG, VERSION_TAG_METRICS, _client, get_version,
                                          versions_tagged)

ADOPTED_FROM_TAG = "dlfm.adopted_from_version"
ADOPTED_RUN_TAG = "dlfm.adopted_from_run"
PROVENANCE_TAGS = (LABEL_COUNT_TAG, LABEL_DIGEST_TAG, LABEL_SELECTION_TAG, PROBE_DIGEST_TAG, PROBE_METHOD_TAG)


@dataclass
class AdoptionOutcome:
    adopted: bool
    version: str  # the version to use from now on: the new one, or the given one when it needed no adoption
    message: str


def adopt(version: str, reason: str = "") -> AdoptionOutcome:
    """Register version ``version``'s weights again with the installed dlfm's code (see the module docstring)."""
    from dlfm.code_trust import package_digests
    from dlfm.models.serialization import read_arch
    from dlfm.tracking.registration import register_encoder_dir
    from dlfm.tracking.runs import stage_run
    from dlfm.tracking.store import check_store_writable

    check_store_writable()
    old = get_version(version)
    uri = f"models:/{MODEL_NAME}/{old.version}"
    with downloaded_encoder(uri, same_code=False) as (local, encoder_dir):
        differs = carried_code_difference(local)
        if differs is None:
            return AdoptionOutcome(False, old.version, f"version {old.version} already carries the installed dlfm's "
                                                       "code: promote, evaluate and serve it as it is")
        check_weights_fit(uri, encoder_dir)
        installed = Path(__file__).resolve().parents[1]
        code_digest = hashlib.sha256(repr(sorted(package_digests(installed).items())).encode()).hexdigest()
        once_for = f"adopt v{old.version} code {code_digest[:16]}"
        if earlier := versions_tagged(ONCE_TAG, once_for):
            return AdoptionOutcome(False, earlier[0], f"version {old.version} was adopted by this dlfm already: use "
                                                      f"version {earlier[0]}")
        arch = read_arch(encoder_dir)
        source_run = old.tags.get("source_run_id") or old.run_id
        metrics = source_metrics(source_run, old.tags)
        tags = {ADOPTED_FROM_TAG: old.version, ADOPTED_RUN_TAG: source_run, "dlfm.adopt_reason": reason,
                "dlfm.adopted_code_difference": differs}
        description = (f"Version {old.version}'s weights ({arch.get('name', '?')}, {arch.get('objective', '?')}), "
                       f"registered again with the installed dlfm's code: its own carried code differs ({differs}). "
                       f"The metrics are those its source run {source_run or '(unknown)'} logged, measured by that "
                       "older code." + (f" Reason: {reason}" if reason else ""))
        experiment = _experiment_of(source_run)
        with stage_run("adopt", f"adopt-v{old.version}", experiment, tags=tags, system_metrics=False,
                       description=description) as run_id:
            # the version's tags: the old one's provenance, and where it came from (set as it is registered)
            labels = {**{name: old.tags.get(name, "") for name in PROVENANCE_TAGS}, ADOPTED_FROM_TAG: old.version}
            new = register_encoder_dir(encoder_dir, metrics, old.tags.get("dataset_digest", ""), run_id,
                                       once_for=once_for, labels=labels)
    client = _client()
    registered = client.get_model_version(MODEL_NAME, new).description or ""
    client.update_model_version(MODEL_NAME, new, description=redact(f"{description}\n\n{registered}"))
    return AdoptionOutcome(True, new, f"registered version {new}: version {old.version}'s weights with the installed "
                                      f"dlfm's code (its own differs: {differs}); its metrics are those run "
                                      f"{source_run or '(unknown)'} logged. Version {old.version} is unchanged")


def check_weights_fit(uri: str, encoder_dir: Path) -> None:
    """The weights (with the decoder, when there is one) load into the installed dlfm's architecture, weights-only;
    else one line."""
    from dlfm.models.serialization import load_encoder, load_reconstructor

    try:
        load_reconstructor(encoder_dir) or load_encoder(encoder_dir)  # the reconstructor holds the encoder too
    except (DlfmError, RuntimeError, KeyError, TypeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RegistryError(f"{uri}'s weights do not fit the installed dlfm's architecture ({first[:300]}); "
                            "load it with the dlfm that registered it, or train the encoder again") from None


def source_metrics(run_id: str, version_tags: dict[str, str]) -> dict[str, float]:
    """The val/… and test/… numbers (and probe_penalty) the source run logged; else the version's metric tags."""
    from mlflow.exceptions import MlflowException

    try:
        logged = _client().get_run(run_id).data.metrics if run_id else {}
    except MlflowException:
        logged = {}
    chosen = {name: float(value) for name, value in logged.items()
              if name.startswith(("val/", "test/")) or name == "probe_penalty"}
    if chosen:
        return chosen
    return {name: float(version_tags[name]) for name in VERSION_TAG_METRICS if version_tags.get(name, "") != ""}


def _experiment_of(run_id: str) -> str:
    """The name of the source run's experiment ("" when it is gone: the default experiment then)."""
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_experiment(_client().get_run(run_id).info.experiment_id).name if run_id else ""
    except MlflowException:
        return ""
