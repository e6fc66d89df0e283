"""Anomaly scores from a registered encoder: how unlike the pretraining corpus an image is (no MLflow).

An image is scored by the density of the corpus around its embedding, two ways:

- ``knn``: the mean Euclidean distance to its ``k`` nearest corpus embeddings, after standardising
  each embedding dimension with the corpus mean and sd (so no dimension dominates by scale);
- ``gaussian``: the Mahalanobis distance under one Gaussian fitted to the corpus embeddings, with
  Ledoit-Wolf shrinkage (the corpus may have fewer images than the embedding has dimensions);

and, when the registered version carries its decoder (autoencoder, mae, multitask), by how badly it
reconstructs the image:

- ``reconstruction``: the objective's reconstruction part per image (MSE over the normalised image;
  for mae, over the hidden patches of a seeded mask, normalised per patch with a ViT).

Higher is more anomalous. Each anomaly kind is a simulation preset that differs from Model II in one
known way; the AUROC of a kind's images against held-out normal images says how well each score
separates them. The normal images come from the reference's own distribution by default (issue 28):
with normal images from another distribution (e.g. fixed-lens Model II against the lens-varied
pretrain corpus) the AUROC would measure distance from the corpus, not novelty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dlfm.errors import ConfigError
from dlfm.evaluation.config import parse_seeds

# kind → the simulation preset that renders it (dlfm/simulation/presets.py says what is off, with units)
ANOMALY_KINDS = {
    "long_vortex": "anomaly_long_vortex",  # axion vortex lines 3-7.5″ long (the axion class: 0.03-3″)
    "heavy_subhalos": "anomaly_heavy_subhalos",  # 25 subhalos of 1e10-1e11 M☉ (the cdm class: 1e6-1e10 M☉)
    "wide_psf": "anomaly_wide_psf",  # the instrument off: PSF FWHM 0.32″ instead of 0.16″
}
NORMAL_IS_CORPUS = "corpus"  # AnomalyConfig.normal: the normal images come from the reference's own distribution
SCORES = ("knn", "gaussian")  # density scores: every encoder has them
RECONSTRUCTION_SCORE = "reconstruction"  # only an encoder registered with its decoder has it
ALL_SCORES = (*SCORES, RECONSTRUCTION_SCORE)  # column order of the table, the csv and the figures


@dataclass(frozen=True)
class AnomalyConfig:
    encoder_stage: str = "production"  # registry alias to score with: models:/dlfm-encoder@<stage>
    encoder_uri: str = ""  # any models:/dlfm-encoder/<version> URI; overrides encoder_stage
    corpus: str = "pretrain"  # what "normal" is: a preset or dataset dir whose train split is the reference
    corpus_n_train: int = 1200  # when `corpus` is a preset not cached yet: its train split size (images)
    corpus_seed: int = 1000  # when `corpus` is a preset: its simulation seed
    # held-out normal images: "corpus" (default) draws them from the reference's own distribution (a preset corpus
    # simulated afresh with each evaluation seed; a dataset-dir corpus's test split), or name another preset
    normal: str = NORMAL_IS_CORPUS
    kinds: str = ",".join(ANOMALY_KINDS)  # comma-separated anomaly kinds: long_vortex, heavy_subhalos, wide_psf
    n_images: int = 150  # test images per set (normal and each kind) and seed
    k: int = 5  # neighbours of the knn score
    seeds: str = "0,1,2"  # each seed simulates its own normal and anomalous test images (seed 2000 + s)
    batch_size: int = 256  # images per embedding pass
    device: str = "auto"  # auto | cpu | cuda | mps
    experiment_name: str = ""  # MLflow experiment of a run dlfm starts (empty: MLFLOW_EXPERIMENT_NAME, else deeplense-fm); not an MLproject param: `mlflow run --experiment-name` files those runs

    @property
    def kind_list(self) -> list[str]:
        """The parsed anomaly kinds, in ANOMALY_KINDS order."""
        kinds = [item for item in str(self.kinds).replace(" ", "").split(",") if item]
        unknown = [kind for kind in kinds if kind not in ANOMALY_KINDS]
        if not kinds or unknown:
            raise ConfigError(f"unknown anomaly kind {unknown[0] if unknown else self.kinds!r}; "
                              f"kinds are {', '.join(ANOMALY_KINDS)}")
        return [kind for kind in ANOMALY_KINDS if kind in kinds]

    @property
    def seed_list(self) -> list[int]:
        """The parsed seeds."""
        return parse_seeds(self.seeds)

    def validate(self) -> None:
        """Raise ConfigError for out-of-range values before any work."""
        for name in ("corpus_n_train", "n_images", "k", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.n_images < 3:
            raise ConfigError(f"n_images must be at least 3 (one per class), got {self.n_images}")
        if self.k >= self.corpus_n_train:
            raise ConfigError(f"k={self.k} needs more corpus images than corpus_n_train={self.corpus_n_train}")
        if self.encoder_uri and not self.encoder_uri.startswith("models:/"):
            raise ConfigError(f"encoder_uri must be a models:/dlfm-encoder/<version> URI, got {self.encoder_uri!r}")
        self.kind_list
        self.seed_list

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CorpusDensity:
    """The corpus embeddings, standardised, and a shrunk Gaussian over them: what the scores compare to."""

    mean: np.ndarray  # (d,) per-dimension corpus mean
    scale: np.ndarray  # (d,) per-dimension corpus sd (1 where a dimension is constant)
    reference: np.ndarray  # (n, d) standardised corpus embeddings
    precision: np.ndarray  # (d, d) inverse of the Ledoit-Wolf covariance of the standardised embeddings

    @classmethod
    def fit(cls, corpus_embeddings: np.ndarray) -> "CorpusDensity":
        """Standardise the corpus embeddings and fit the Gaussian."""
        from sklearn.covariance import LedoitWolf

        corpus = np.asarray(corpus_embeddings, dtype=np.float64)
        mean, scale = corpus.mean(axis=0), corpus.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        reference = (corpus - mean) / scale
        return cls(mean, scale, reference, LedoitWolf().fit(reference).get_precision())

    def standardise(self, embeddings: np.ndarray) -> np.ndarray:
        """Embeddings in the corpus's standardised coordinates."""
        return (np.asarray(embeddings, dtype=np.float64) - self.mean) / self.scale

    def knn_score(self, embeddings: np.ndarray, k: int, chunk: int = 512) -> np.ndarray:
        """Mean distance to the ``k`` nearest corpus embeddings (standardised), per image."""
        points = self.standardise(embeddings)
        reference_sq = (self.reference**2).sum(axis=1)
        scores = []
        for start in range(0, len(points), chunk):
            block = points[start:start + chunk]
            squared = (block**2).sum(axis=1)[:, None] + reference_sq[None, :] - 2.0 * block @ self.reference.T
            nearest = np.partition(np.maximum(squared, 0.0), k - 1, axis=1)[:, :k]
            scores.append(np.sqrt(nearest).mean(axis=1))
        return np.concatenate(scores) if scores else np.zeros(0)

    def gaussian_score(self, embeddings: np.ndarray) -> np.ndarray:
        """Mahalanobis distance to the corpus Gaussian, per image."""
        points = self.standardise(embeddings)
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", points, self.precision, points), 0.0))

    def scores(self, embeddings: np.ndarray, k: int) -> dict[str, np.ndarray]:
        """Every score of SCORES, per image."""
        return {"knn": self.knn_score(embeddings, k), "gaussian": self.gaussian_score(embeddings)}


def auroc(normal_scores: np.ndarray, anomalous_scores: np.ndarray) -> float:
    """Area under the ROC curve of anomalous (positive) against normal images; 0.5 is chance."""
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(normal_scores)), np.ones(len(anomalous_scores))]
    return float(roc_auc_score(labels, np.r_[normal_scores, anomalous_scores]))


def summarise(aurocs: dict[tuple[str, str], list[float]]) -> list[dict]:
    """Rows (kind, score, AUROC mean, sd over seeds, n seeds) from per-seed AUROCs keyed by (kind, score)."""
    rows = []
    for (kind, score), values in aurocs.items():
        values = np.asarray(values, dtype=np.float64)
        rows.append({"kind": kind, "score": score, "auroc_mean": float(values.mean()),
                     "auroc_sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "n_seeds": len(values)})
    return rows


def table_markdown(rows: list[dict]) -> str:
    """AUROC per kind (rows) and score (columns, those the rows have), mean ± sd over seeds."""
    kinds = list(dict.fromkeys(row["kind"] for row in rows))
    scores = [score for score in ALL_SCORES if any(row["score"] == score for row in rows)]
    by_key = {(row["kind"], row["score"]): row for row in rows}
    lines = ["| anomaly kind | " + " | ".join(f"AUROC ({score})" for score in scores) + " | seeds |",
             "|---|" + "---|" * len(scores) + "---|"]
    for kind in kinds:
        cells = [f"{by_key[kind, s]['auroc_mean']:.3f} ± {by_key[kind, s]['auroc_sd']:.3f}" for s in scores]
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {by_key[kind, SCORES[0]]['n_seeds']} |")
    return "\n".join(lines)
