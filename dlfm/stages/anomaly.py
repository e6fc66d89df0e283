"""The anomaly stage: score held-out normal and anomalous images by how unlike the corpus they are.

One run. The alias is resolved to a version once; the corpus's train split is embedded once; each
seed simulates its own anomalous test images, and normal ones from the reference's own distribution
(the corpus preset at the evaluation seed, or a dataset-dir corpus's test split; ``normal`` may name
another preset). A version registered with its
decoder is also scored by reconstruction error; one without (supervised) says so in one line.
Logged: AUROC per kind and score (mean and sd over seeds) as metrics, anomaly_table.md,
anomaly_scores.csv (every image's scores) and figures/anomaly_<kind>.png.
"""

from __future__ import annotations

import numpy as np

from dlfm import tracking
from dlfm.anomaly import (ANOMALY_KINDS, NORMAL_IS_CORPUS, RECONSTRUCTION_SCORE, SCORES, AnomalyConfig, CorpusDensity,
                          auroc, summarise, table_markdown)
from dlfm.data.resample import dataset_for_encoder
from dlfm.errors import ConfigError
from dlfm.simulation import PRESETS
from dlfm.evaluation.embedding import reconstruction_errors
from dlfm.evaluation.fit import predict
from dlfm.stages.common import resolve_dataset
from dlfm.stages.evaluate import resolve_version
from dlfm.tracking import registry

EVALUATION_SEED_OFFSET = 2000  # normal and anomalous test sets use seed 2000 + s: never a training or corpus seed


def _test_images(preset: str, n_images: int, seed: int, encoder):
    """The test split of a preset simulated at ``seed`` (tiny train/val splits: only the test split is scored), on the
    grid ``encoder`` reads."""
    dataset = dataset_for_encoder(resolve_dataset(preset, n_train=3, n_val=3, n_test=n_images, seed=seed), encoder, preset)
    return dataset, dataset.get_images("test")


def normal_test_images(config: AnomalyConfig, corpus, seed: int, encoder) -> np.ndarray:
    """Held-out normal images of one evaluation seed: by default from the reference's own distribution."""
    if config.normal != NORMAL_IS_CORPUS:
        return _test_images(config.normal, config.n_images, seed, encoder)[1]
    preset = corpus.manifest.get("preset", "") if config.corpus not in PRESETS else config.corpus
    if config.corpus in PRESETS:  # the corpus's preset, drawn afresh: same distribution, images it never held
        return _test_images(preset, config.n_images, seed, encoder)[1]
    held_out = corpus.get_images("test")  # a dataset dir: its own held-out split (the same images every seed)
    if len(held_out) < 3:
        raise ConfigError(f"corpus {config.corpus!r} has {len(held_out)} test images; normal=corpus needs its test split "
                          "as the held-out normal set (at least 3), or pass -P normal=<preset>")
    return held_out[:config.n_images]


def describe_sets(config: AnomalyConfig, corpus) -> tuple[str, str]:
    """(reference, normal) in words, for the tags, the table and the terminal."""
    if config.corpus in PRESETS:
        reference = f"preset {config.corpus} (seed {config.corpus_seed}), train split of {config.corpus_n_train} images"
    else:
        reference = f"dataset {config.corpus} (digest {corpus.digest[:12]}), its train split"
    if config.normal == NORMAL_IS_CORPUS:
        normal = (f"preset {config.corpus} simulated at seed {EVALUATION_SEED_OFFSET} + s: the reference's own distribution"
                  if config.corpus in PRESETS else f"the test split of {config.corpus}: held out from the reference")
    else:
        normal = (f"preset {config.normal} at seed {EVALUATION_SEED_OFFSET} + s (not the reference's distribution: "
                  "AUROC then measures distance from the reference, not novelty alone)")
    return reference, normal


def run_anomaly_stage(config: AnomalyConfig) -> dict:
    """Embed the corpus, score normal and anomalous test images per seed, log AUROCs, table and figures."""
    import pandas as pd

    from dlfm.plots.anomaly import score_histograms_figure
    from dlfm.training.runtime import resolve_device

    asked_for = config.encoder_uri or f"models:/dlfm-encoder@{config.encoder_stage}"
    description = (f"anomaly: how unlike the corpus {config.corpus!r} held-out normal images ({config.normal}) "
                   f"and the anomaly kinds {config.kinds} are, in the embedding of {asked_for}; AUROC per kind over seeds {config.seeds}.")
    with tracking.stage_run("anomaly", f"anomaly-{config.encoder_uri or config.encoder_stage}", config.experiment_name,
                            description=description) as run_id:
        config.validate()
        device = resolve_device(config.device)
        tracking.log_params(config.to_dict())
        asked, version_uri, version = resolve_version(config)
        reconstructor = registry.load_registered_reconstructor(version_uri)
        encoder = reconstructor.model.encoder if reconstructor else registry.load_registered_encoder(version_uri)
        scores_used = (*SCORES, RECONSTRUCTION_SCORE) if reconstructor is not None else SCORES
        if reconstructor is None:
            note = (f"version {version.version} ({version.tags.get('objective', '?')}) holds no decoder: no reconstruction "
                    "score, density scores only")
        else:
            note = f"scored by the {reconstructor.objective} decoder's reconstruction error too"
        print(f"[anomaly] {note}", flush=True)
        tracking.set_tags({"dlfm.device": device, "dlfm.encoder_requested": asked, "dlfm.encoder_uri": version_uri,
                           "dlfm.encoder_version": version.version, "dlfm.encoder": encoder.name,
                           "dlfm.encoder_objective": version.tags.get("objective", ""), "dlfm.anomaly.reconstruction": note})

        corpus = resolve_dataset(config.corpus, n_train=config.corpus_n_train, n_val=3, n_test=3, seed=config.corpus_seed)
        corpus = dataset_for_encoder(corpus, encoder, "corpus")
        tracking.log_dataset(corpus, context="anomaly-corpus")
        embed = lambda images: predict(encoder, images, device, batch_size=config.batch_size)  # noqa: E731
        density = CorpusDensity.fit(embed(corpus.get_images("train")))

        def score(images) -> dict[str, np.ndarray]:
            scores = density.scores(embed(images), config.k)
            if reconstructor is not None:
                scores[RECONSTRUCTION_SCORE] = reconstruction_errors(reconstructor, images, device, config.batch_size)
            return scores

        reference, normal_from = describe_sets(config, corpus)
        tracking.set_tags({"dlfm.anomaly.reference": reference, "dlfm.anomaly.normal": normal_from})
        print(f"[anomaly] reference: {reference}; normal: {normal_from}", flush=True)
        aurocs: dict[tuple[str, str], list[float]] = {(kind, s): [] for kind in config.kind_list for s in scores_used}
        pooled = {name: {s: [] for s in scores_used} for name in ("normal", *config.kind_list)}
        per_image = []
        for seed in config.seed_list:
            sim_seed = EVALUATION_SEED_OFFSET + seed
            normal_images = normal_test_images(config, corpus, sim_seed, encoder)
            normal = score(normal_images)
            sets = {"normal": normal}
            for kind in config.kind_list:
                _, images = _test_images(ANOMALY_KINDS[kind], config.n_images, sim_seed, encoder)
                sets[kind] = score(images)
                for s in scores_used:
                    aurocs[kind, s].append(auroc(normal[s], sets[kind][s]))
            for name, scores in sets.items():
                for s in scores_used:
                    pooled[name][s].append(scores[s])
                per_image += [{"seed": seed, "set": name, "image": i, **{s: float(scores[s][i]) for s in scores_used}}
                              for i in range(len(scores[SCORES[0]]))]
            print(f"[anomaly] seed {seed}: " + ", ".join(
                f"{kind} AUROC " + " ".join(f"{s} {aurocs[kind, s][-1]:.3f}" for s in scores_used)
                for kind in config.kind_list), flush=True)

        rows = summarise(aurocs)
        text = f"Reference (what normal is): {reference}. Normal test images: {normal_from}.\n\n" + table_markdown(rows)
        tracking.log_metrics({f"auroc_{row['score']}/{row['kind']}": row["auroc_mean"] for row in rows}
                             | {f"auroc_{row['score']}_sd/{row['kind']}": row["auroc_sd"] for row in rows})
        tracking.log_text(text + "\n", "anomaly_table.md")
        tracking.log_text(pd.DataFrame(per_image).to_csv(index=False), "anomaly_scores.csv")
        tracking.log_dict({"rows": rows}, "anomaly.json")
        normal_pooled = {s: np.concatenate(pooled["normal"][s]) for s in scores_used}
        for kind in config.kind_list:
            kind_pooled = {s: np.concatenate(pooled[kind][s]) for s in scores_used}
            means = {row["score"]: row["auroc_mean"] for row in rows if row["kind"] == kind}
            tracking.log_figure(score_histograms_figure(kind, normal_pooled, kind_pooled, means),
                                f"figures/anomaly_{kind}.png")
        tracking.describe_run(f"{description}\n\nEncoder version {version.version}.\n\n{text}")
        print(tracking.stage_summary("anomaly", run_id), flush=True)
        return {"run_id": run_id, "version": version.version, "rows": rows, "markdown": text}
