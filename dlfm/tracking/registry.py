"""The ``dlfm-encoder`` registered model: versions, stage aliases and the promotion history.

Stages are aliases (MLflow 3 deprecates registry stages). MLflow keeps no history of alias
moves (mlflow issue #2169), so every promotion is also recorded as a run in the
``dlfm-promotions`` experiment: stage, version, previous version, time, user and reason.

The one door callers use (``registry.promote``, ``registry.register_encoder_version``, …); the work lives
by job in ``model_versions`` (names, tags, version lookups), ``registration``, ``promotion``,
``model_trust`` (resolving, refusing and loading versions) and ``adoption`` (an older dlfm's version, registered again).
"""

from __future__ import annotations

from dlfm.tracking.model_versions import (  # noqa: F401
    MODEL_NAME,
    STAGES,
    HISTORY_EXPERIMENT,
    STAGE_PATTERN,
    PYFUNC_ARTIFACT,
    LOADER_MODULE,
    PICKLE_SUFFIXES,
    VERSION_TAG_METRICS,
    LOWER_IS_BETTER,
    ONCE_TAG,
    LABEL_COUNT_TAG,
    LABEL_DIGEST_TAG,
    LABEL_SELECTION_TAG,
    PROBE_DIGEST_TAG,
    PROBE_METHOD_TAG,
    probe_mismatch,
    registry_lock,
    check_stage_name,
    versions_tagged,
    label_tags,
    LabelProvenance,
    label_provenance,
    VersionInfo,
    get_version,
    list_versions,
    version_for_stage,
    known_stages,
    version_for_run,
    version_metric,
)
from dlfm.tracking.registration import (  # noqa: F401
    register_encoder_version,
    logged_model_name,
    package_code,
    register_encoder_dir,
    MODEL_DESCRIPTION,
    describe_registered_model,
)
from dlfm.tracking.promotion import (  # noqa: F401
    PromotionOutcome,
    promote,
    permission_needed,
    promoting_user,
    record_promotion,
    promotion_history,
)
from dlfm.tracking.adoption import ADOPTED_FROM_TAG, AdoptionOutcome, adopt  # noqa: F401
from dlfm.tracking.model_trust import (  # noqa: F401
    resolve_encoder_uri,
    check_dlfm_made,
    load_registered_encoder,
    load_registered_reconstructor,
    load_registered_weights,
)

__all__ = [
    "MODEL_NAME",
    "STAGES",
    "HISTORY_EXPERIMENT",
    "STAGE_PATTERN",
    "PYFUNC_ARTIFACT",
    "LOADER_MODULE",
    "PICKLE_SUFFIXES",
    "VERSION_TAG_METRICS",
    "LOWER_IS_BETTER",
    "ONCE_TAG",
    "LABEL_COUNT_TAG",
    "LABEL_DIGEST_TAG",
    "LABEL_SELECTION_TAG",
    "PROBE_DIGEST_TAG",
    "PROBE_METHOD_TAG",
    "probe_mismatch",
    "registry_lock",
    "check_stage_name",
    "versions_tagged",
    "label_tags",
    "LabelProvenance",
    "label_provenance",
    "VersionInfo",
    "get_version",
    "list_versions",
    "version_for_stage",
    "known_stages",
    "version_for_run",
    "version_metric",
    "register_encoder_version",
    "logged_model_name",
    "package_code",
    "register_encoder_dir",
    "MODEL_DESCRIPTION",
    "describe_registered_model",
    "PromotionOutcome",
    "promote",
    "permission_needed",
    "promoting_user",
    "record_promotion",
    "promotion_history",
    "resolve_encoder_uri",
    "check_dlfm_made",
    "load_registered_encoder",
    "load_registered_weights",
    "load_registered_reconstructor",
    "ADOPTED_FROM_TAG",
    "AdoptionOutcome",
    "adopt",
]
