"""The main pipeline: simulate → every objective of the table → (tune) → promote → evaluate → more corpora.

The self-supervised objectives pretrain on the `pretrain` corpus (its own seed); the promoted encoder is
evaluated on a held-out model_ii set (another seed) and the regression set, at demo label budgets. Then the
self-supervised objectives pretrain again on each corpus of spread_pretrain_seeds and the promoted objective's
version of each is evaluated the same way, so the report gives each verdict's spread over corpora.

Each step is a nested MLflow Project run; a step whose entry point, params and code version
already have a FINISHED run is reused. The summary goes to the terminal, the parent run and
reports/latest/.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from dlfm import tracking
from dlfm.errors import ConfigError, DlfmError, RegistryError
from dlfm.evaluation import corpus_spread
from dlfm.objectives import OBJECTIVES
from dlfm.outputs import check_report_dir, write_report_dir
from dlfm.tracking import registry, steps
from dlfm.tracking.results import EVALUATION_ARTIFACT, SPREAD_ARTIFACT, json_artifact
from dlfm.training.config import PRECISIONS

REPO_ROOT = Path(__file__).resolve().parents[2]
# The one quantity candidates are ranked and gated on: a linear probe on frozen embeddings of the same model_ii
# split, measured the same way for every objective (a supervised head's val/macro_auc is another quantity).
PROMOTION_METRIC = "val/probe_macro_auc"
PROMOTION_RULE = (f"this run's candidates of promote_from (default: the label-free objectives) are ranked on "
                  f"{PROMOTION_METRIC} (logistic regression on frozen embeddings of the same model_ii train split, "
                  "evaluate's probe with its penalty chosen by cross-validation, scored on its val split, for every "
                  "objective); the best goes to staging, "
                  "and to {stage} only if it beats the holder's {metric}{gate}, both scored again on this run's probe set "
                  "(one quantity even when the holder was probed on another set or by another probe); evaluate runs on "
                  "that best version, by version")
GATE_WORDS = {"better": "", "beyond_noise": " beyond the val split's noise (gate=beyond_noise: the 95 % paired "
                                             "bootstrap interval of the difference lies above 0)"}
GATES = tuple(GATE_WORDS)  # MainConfig.gate
SUMMARY_METRICS = (PROMOTION_METRIC, "val/accuracy", "val/macro_auc", "test/probe_macro_auc", "test/accuracy",
                   "test/macro_auc", "test/recon_mse", "test/recon_mse_vs_mean_image", "test/masked_mse",
                   "test/masked_mse_vs_mean_image", "test/masked_norm_mse_vs_mean_image",
             "test/masked_norm_mse_vs_position_mean")


def objective_params(objective: str, encoder: str) -> dict:
    """What a training step of ``objective`` takes beyond the shared params: a ViT's masking patch is its token size.

    MAE hides whole tokens, so TrainConfig refuses a patch_size other than the encoder's token size
    (8 px for vit_tiny, 4 px for vit_tiny_p4); CNNs keep TrainConfig's default patch.
    """
    from dlfm.models.encoders import encoder_row

    token_size = encoder_row(encoder).token_size
    return {"patch_size": token_size} if OBJECTIVES[objective].masks_input and token_size else {}


HELD_OUT_N_VAL = 30  # evaluate scores on test and never reads val, so the held-out set's val split is token-sized


@dataclass(frozen=True)
class MainConfig:
    n_train: int = 1200  # classification images (model_ii) in the train split; demo size
    n_val: int = 300  # classification images (model_ii) in the val split (val metrics; promotion ranks on its probe AUC)
    n_test: int = 300  # classification images (model_ii) in the test split (the training stages' test metrics)
    regression_n_train: int = 600  # lens-parameter images evaluate's regression budgets draw from
    regression_n_val: int = 60  # evaluate scores on test and never reads val
    regression_n_test: int = 300  # lens-parameter images evaluate scores regression on
    pretrain_n_train: int = 1200  # pretraining corpus (preset pretrain) train split; demo size (reference: 20000)
    pretrain_n_val: int = 300  # pretraining corpus val split (the self-supervised loss on held-out corpus images)
    pretrain_n_test: int = 300  # pretraining corpus test split (reconstruction metrics)
    pretrain_seed: int = 1000  # corpus seed: the evaluation sets use `seed`, so no image is shared
    # More corpus seeds: the label-free objectives pretrain again on each and evaluate runs on the promoted objective's
    # version of each, so the report gives every verdict's spread over corpora (empty: one corpus)
    spread_pretrain_seeds: str = "2000,3000"
    encoder: str = "resnet18"  # encoder for all four objectives (fair ablation)
    epochs: int = 4  # epochs of every training stage (demo size)
    batch_size: int = 64  # images per optimiser step in every training stage
    lr: float = 0.0  # base AdamW lr per 256 images of every training stage (0 = each objective's recipe)
    recon_weight: float = 1.0  # multitask loss weight (or tuned, with tune=true)
    seed: int = 0  # training seed and the simulation seed of model_ii and regression (held-out evaluation set: seed + 1)
    tune: bool = False  # run the Optuna tune stage and let its best encoder compete
    n_trials: int = 6  # tune: trials
    eval_n_train: int = 300  # held-out model_ii images (seed + 1, never trained on) that evaluate's budgets draw from
    eval_n_test: int = 150  # held-out model_ii images evaluate scores classification on
    eval_budgets: str = "10,50,all"  # evaluate label budgets (per class for classification: all = eval_n_train / 3)
    # Demo: frozen arms only. Their heads are fitted to convergence on cached embeddings, in seconds; the
    # fine-tune arms need ~50+ steps of a ResNet18 per cell to leave chance, minutes each on 2 CPU cores.
    eval_arms: str = "pretrained-frozen,random-frozen"  # evaluate arms (add pretrained-finetune,scratch on a GPU)
    eval_finetune_budgets: str = ""  # the eval_budgets at which the fine-tune arms run, when eval_arms has them (empty: all)
    eval_epochs: int = 20  # evaluate epochs over its labelled subset (fine-tune arms; frozen heads are fitted to convergence)
    eval_min_steps: int = 200  # evaluate: optimiser steps at least per cell the loop trains (fine-tune arms)
    # evaluate seeds: ten. With three, the demo's weakest verdicts (10 labels per class, regression at 10 and 50)
    # read differently on two CPUs; ten settled every one on both, for about 2.5 min more (results log, 2026-12-05)
    seeds: str = "0,1,2,3,4,5,6,7,8,9"  # evaluate seeds (label subsets, heads, random encoders); verdicts are t intervals over them
    promote_stage: str = "production"  # the stage the best encoder is promoted to (gated on val/probe_macro_auc)
    # Which candidates may be promoted (and so evaluated): by default only the label-free objectives; add supervised,
    # multitask or tune to let a labelled encoder win, which the report then calls a labelled upper bound.
    promote_from: str = "autoencoder,mae"  # comma-separated objectives (and tune) that compete for promotion
    # When the best candidate takes promote_stage from its holder, both scored on this run's probe set: better (any
    # positive difference) | beyond_noise (also the 95 % paired bootstrap interval of the difference lies above 0)
    gate: str = "better"
    device: str = "auto"  # every training step and evaluate: auto (cuda, then mps, then cpu) | cpu | cuda | mps
    precision: str = "auto"  # every training step and evaluate: auto (bf16 where the hardware has it) | fp32 | bf16
    workers: int = 0  # simulation processes (0 = all cores)
    experiment_name: str = ""  # MLflow experiment of a run dlfm starts (empty: MLFLOW_EXPERIMENT_NAME, else deeplense-fm); not an MLproject param: `mlflow run --experiment-name` files those runs
    report_dir: str = "reports/latest"  # the summary report (report.md and figures) is written here, replacing the previous one

    def validate(self) -> None:
        for name in ("n_train", "n_val", "n_test", "regression_n_train", "regression_n_val", "regression_n_test",
                     "pretrain_n_train", "pretrain_n_val", "pretrain_n_test", "epochs", "batch_size", "n_trials",
                     "eval_n_train", "eval_n_test", "eval_epochs"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0 = all cores), got {self.workers!r}")
        if not self.lr >= 0 or not self.recon_weight >= 0:
            raise ConfigError("lr must be >= 0 (0: each objective's recipe) and recon_weight >= 0")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.pretrain_seed == self.seed:
            raise ConfigError(f"pretrain_seed must differ from seed ({self.seed}) so that the corpus shares no image "
                              "with the evaluation sets; pass another pretrain_seed")
        self.corpus_seeds  # noqa: B018 - parses and checks
        registry.check_stage_name(self.promote_stage)
        if self.gate not in GATES:
            raise ConfigError(f"unknown gate {self.gate!r}; choose one of {', '.join(GATES)}")
        self.promote_from_list  # noqa: B018 - parses and checks
        check_report_dir(self.report_dir)  # before any work: never wipe a folder dlfm did not write
        for config in self.step_configs():  # every param a step will take, checked before anything is simulated
            config.validate()

    @property
    def promote_from_list(self) -> list[str]:
        """The parsed promote_from: objectives of the table, or tune (which then must be on)."""
        names = [n for n in str(self.promote_from).replace(" ", "").split(",") if n]
        known = (*OBJECTIVES, "tune")
        unknown = [n for n in names if n not in known]
        if not names or unknown or len(set(names)) != len(names):
            raise ConfigError(f"promote_from must be distinct comma-separated names among {', '.join(known)}, "
                              f"got {self.promote_from!r}")
        if names == ["tune"] and not self.tune:
            raise ConfigError("promote_from=tune needs tune=true (no tune step runs otherwise)")
        return names

    @property
    def corpus_seeds(self) -> list[int]:
        """pretrain_seed, then the parsed spread_pretrain_seeds: distinct, and none an evaluation set's seed."""
        try:
            spread = [int(s) for s in str(self.spread_pretrain_seeds).replace(" ", "").split(",") if s]
        except ValueError:
            raise ConfigError(f"spread_pretrain_seeds must be comma-separated integers (or empty), got "
                              f"{self.spread_pretrain_seeds!r}") from None
        seeds = [self.pretrain_seed, *spread]
        taken = {self.seed, self.seed + 1}  # model_ii and regression, the held-out set
        if len(set(seeds)) != len(seeds) or taken & set(spread) or any(s < 0 for s in spread):
            raise ConfigError(f"spread_pretrain_seeds must be distinct non-negative integers, none equal to pretrain_seed "
                              f"({self.pretrain_seed}) or an evaluation set's seed ({self.seed}, {self.seed + 1}); got "
                              f"{self.spread_pretrain_seeds!r}")
        return seeds

    def step_configs(self) -> list:
        """The configs of the steps this run will launch, built from its params (the datasets are placeholders)."""
        from dlfm.evaluation import EvaluateConfig
        from dlfm.simulation import SimulationConfig
        from dlfm.training.config import TrainConfig
        from dlfm.tune.config import TuneConfig

        common = {"encoder": self.encoder, "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                  "seed": self.seed, "device": self.device, "experiment_name": self.experiment_name}
        configs = [
            SimulationConfig(preset="model_ii", n_train=self.n_train, n_val=self.n_val, n_test=self.n_test, seed=self.seed),
            SimulationConfig(preset="regression", n_train=self.regression_n_train, n_val=self.regression_n_val,
                             n_test=self.regression_n_test, seed=self.seed),
            SimulationConfig(preset="pretrain", n_train=self.pretrain_n_train, n_val=self.pretrain_n_val,
                             n_test=self.pretrain_n_test, seed=self.pretrain_seed),
            SimulationConfig(preset="model_ii", n_train=self.eval_n_train, n_val=HELD_OUT_N_VAL, n_test=self.eval_n_test,
                             seed=self.seed + 1),
            *(TrainConfig(objective=name, **({"recon_weight": self.recon_weight} if spec.weighted else {}),
                          **objective_params(name, self.encoder), **common)
              for name, spec in OBJECTIVES.items()),
            EvaluateConfig(encoder_uri=f"models:/{registry.MODEL_NAME}/1", budgets=self.eval_budgets,
                           arms=self.eval_arms, finetune_budgets=self.eval_finetune_budgets, seeds=self.seeds,
                           epochs=self.eval_epochs, min_steps=self.eval_min_steps, device=self.device,
                           experiment_name=self.experiment_name),
        ]
        if self.tune:
            configs.append(TuneConfig(train=TrainConfig(objective="multitask", recon_weight=self.recon_weight, **common),
                                      n_trials=self.n_trials))
        return configs


def run_main_stage(config: MainConfig) -> dict:
    """Chain every step as nested runs, promote the best encoder, evaluate it, and report."""
    version = steps.code_version(REPO_ROOT)
    summary_rows = []
    description = ("The whole pipeline: simulate, train every objective (" + ", ".join(OBJECTIVES)
                   + (", tune" if config.tune else "") + f") for {config.epochs} epochs, promote the best by {PROMOTION_METRIC} "
                   f"to {config.promote_stage}, evaluate it against a random encoder"
                   + (f", then pretrain and evaluate again on corpora {config.spread_pretrain_seeds} for the spread over "
                      "corpora" if str(config.spread_pretrain_seeds).strip() else "") + ". Children are the steps.")
    with tracking.stage_run("main", "main-demo", config.experiment_name, description=description) as run_id:
        config.validate()
        tracking.log_params(asdict(config))
        exp = tracking.run_location(run_id)["experiment"]  # the steps land where this run landed

        def step(entry: str, params: dict, label: str = ""):
            run, reused = steps.run_step(REPO_ROOT, entry, params, exp, version)
            print(f"[main] {entry}: {'reused' if reused else 'ran'} run {run.info.run_id}", flush=True)
            # Which run each step was (a reused step is another main's child): the results page reads these.
            tracking.set_tags({f"dlfm.step.{label or entry}": run.info.run_id})
            return run

        data_dir = str(Path("data").resolve())  # beside the caller, even though steps run in the project root
        common_sim = {"seed": config.seed, "workers": config.workers, "out_dir": data_dir}
        cls_run = step("simulate", {"preset": "model_ii", "n_train": config.n_train, "n_val": config.n_val,
                                    "n_test": config.n_test, **common_sim}, "simulate-model_ii")
        reg_run = step("simulate", {"preset": "regression", "n_train": config.regression_n_train,
                                    "n_val": config.regression_n_val, "n_test": config.regression_n_test, **common_sim},
                       "simulate-regression")
        classification_dir, regression_dir = cls_run.data.tags["dlfm.dataset_dir"], reg_run.data.tags["dlfm.dataset_dir"]
        train_params = {"dataset": classification_dir, "encoder": config.encoder, "epochs": config.epochs,
                        "batch_size": config.batch_size, "lr": config.lr, "seed": config.seed, "device": config.device,
                        "precision": config.precision}

        def simulate_corpus(seed: int, suffix: str = "") -> str:
            run = step("simulate", {"preset": "pretrain", "n_train": config.pretrain_n_train, "n_val": config.pretrain_n_val,
                                    "n_test": config.pretrain_n_test, **common_sim, "seed": seed}, f"simulate-pretrain{suffix}")
            return run.data.tags["dlfm.dataset_dir"]

        def train(objective: str, corpus_dir: str, suffix: str = ""):
            spec = OBJECTIVES[objective]
            extra = {"recon_weight": config.recon_weight} if spec.weighted else {}
            extra.update(objective_params(objective, config.encoder))
            if spec.probed:  # self-supervised: learn from the corpus, probe on the held-out model_ii set
                extra["pretrain_dataset"] = corpus_dir
            return step(objective, {**train_params, **extra}, f"{objective}{suffix}")

        corpus_dir = simulate_corpus(config.pretrain_seed)
        candidates = [(objective, train(objective, corpus_dir)) for objective in OBJECTIVES]
        if config.tune:
            run = step("tune", {**train_params, "n_trials": config.n_trials, "study_name": f"main-{version}"})
            candidates.append(("tune", run))
        for objective, run in candidates:
            metrics = run.data.metrics
            summary_rows.append({"stage": objective, "run": run.info.run_id[:8],
                                 "version": run.data.tags.get("dlfm.registered_version", ""),
                                 **{name: metrics.get(name) for name in SUMMARY_METRICS}})
        # The gate compares one quantity: candidate and holder scored on this run's probe set, with the val noise.
        evidence = gate_evidence(best_candidate(summary_rows, config.promote_from_list)["version"],
                                 config.promote_stage, classification_dir, config.seed, config.device)
        if evidence.rescored:
            tracking.set_tags({"dlfm.gate_evidence": evidence.sentence()})
            tracking.log_metrics(evidence.metrics())
        best, outcome = promote_best(summary_rows, config.promote_stage, run_id, config.promote_from_list,
                                     evidence.rescored, beyond_noise=config.gate == "beyond_noise",
                                     interval=evidence.interval)
        print(f"[main] {outcome.message}", flush=True)
        # This run's best version, even when the gate kept an older holder on the stage: never whoever holds the alias.
        promoted = best["version"]
        # evaluate scores on test and never reads val, so the held-out set's val split is token-sized
        held_out = step("simulate", {"preset": "model_ii", "n_train": config.eval_n_train, "n_val": HELD_OUT_N_VAL,
                                     "n_test": config.eval_n_test, **common_sim, "seed": config.seed + 1},
                        "simulate-held_out")
        held_out_dir = held_out.data.tags["dlfm.dataset_dir"]

        def evaluate(version: str, suffix: str = ""):
            # The version, not the alias: a step reused by digest must have evaluated this very encoder.
            return step("evaluate", {"encoder_uri": f"models:/{registry.MODEL_NAME}/{version}",
                                     "classification_dataset": held_out_dir, "regression_dataset": regression_dir,
                                     "budgets": config.eval_budgets, "arms": config.eval_arms,
                                     "finetune_budgets": config.eval_finetune_budgets, "seeds": config.seeds,
                                     "epochs": config.eval_epochs, "min_steps": config.eval_min_steps,
                                     "device": config.device, "precision": config.precision}, f"evaluate{suffix}")

        evaluate_run = evaluate(promoted)
        spread = spread_over_corpora(config, best, candidates, evaluate_run, simulate_corpus, train, evaluate)
        tracking.log_dict(spread, SPREAD_ARTIFACT)
        tracking.log_metrics(corpus_spread.metrics(spread["rows"]))
        tracking.set_tags({f"dlfm.corpus_verdict.{row['name']}": row["word"] for row in spread["rows"]
                           if row["kind"] == "verdict" and len(spread["draws"]) > 1})
        report = write_report(config, summary_rows, best, outcome, evaluate_run, evidence, spread)
        print(report, flush=True)
        tracking.log_artifacts(config.report_dir, "report")
        tracking.set_tags({"dlfm.promoted_version": promoted, "dlfm.best_stage": best["stage"],
                           "dlfm.promotion_rule": PROMOTION_RULE.format(stage=config.promote_stage, metric=PROMOTION_METRIC,
                                                                         gate=GATE_WORDS[config.gate]),
                           f"dlfm.{config.promote_stage}_version": registry.version_for_stage(config.promote_stage) or ""})
        parent_metrics = summary_metrics(summary_rows, promoted, evaluate_run.data.metrics)
        tracking.log_metrics(parent_metrics)
        tracking.describe_run(f"{description}\n\nResult: best {best['stage']} (version {best['version']}, {PROMOTION_METRIC} "
                              f"{best[PROMOTION_METRIC]:.4f}); {outcome.message}; evaluated version {promoted}. "
                              "Summary metrics: <stage>/val_probe_macro_auc, <stage>/val_macro_auc, promoted_version, "
                              "evaluate/… (ratios), corpora/… (mean, sd and 95 % interval over the pretraining corpora).")
        print(tracking.stage_summary("main", run_id, {k: v for k, v in parent_metrics.items() if "probe_macro_auc" in k}),
              flush=True)
        return {"run_id": run_id, "rows": summary_rows, "promoted": promoted, "evaluate_run": evaluate_run.info.run_id}


def spread_over_corpora(config: MainConfig, best: dict, candidates: list, evaluate_run, simulate_corpus, train,
                        evaluate) -> dict:
    """The content of SPREAD_ARTIFACT: the draw main promoted from, then one per spread_pretrain_seeds seed (the label-free
    objectives pretrained again on that corpus, evaluate on ``best``'s objective's version of it), and their rows.

    ``simulate_corpus(seed, suffix)``, ``train(objective, corpus_dir, suffix)`` and ``evaluate(version, suffix)``
    launch main's steps. A best candidate that never read the corpus (a labelled objective, tune) gets no more draws.
    """
    def probes(runs) -> dict[str, float]:
        return {objective: run.data.metrics[PROMOTION_METRIC] for objective, run in runs
                if not labelled(objective) and PROMOTION_METRIC in run.data.metrics}

    def verdicts(run) -> list[dict]:
        return json_artifact(run.info.run_id, EVALUATION_ARTIFACT).get("verdicts", [])

    draws = [corpus_spread.draw(config.pretrain_seed, probes(candidates), verdicts(evaluate_run), best["version"])]
    note = ""
    if len(config.corpus_seeds) > 1 and labelled(best["stage"]):
        note = (f"The evaluated encoder ({best['stage']}) did not pretrain on the corpus, so spread_pretrain_seeds "
                f"({config.spread_pretrain_seeds}) added no draws.")
        print(f"[main] {note}", flush=True)
    elif len(config.corpus_seeds) > 1:
        for seed in config.corpus_seeds[1:]:
            suffix = f"-corpus-{seed}"
            corpus_dir = simulate_corpus(seed, suffix)
            runs = [(objective, train(objective, corpus_dir, suffix)) for objective, spec in OBJECTIVES.items() if spec.probed]
            version = dict(runs)[best["stage"]].data.tags["dlfm.registered_version"]
            draws.append(corpus_spread.draw(seed, probes(runs), verdicts(evaluate(version, suffix)), version))
    return {"objective": best["stage"], "draws": draws, "rows": corpus_spread.spread_rows(draws), "note": note}


def default_promote_from() -> list[str]:
    """The objectives main promotes from unless told otherwise: those that read no label (MainConfig.promote_from)."""
    return MainConfig().promote_from_list


def labelled(stage: str) -> bool:
    """A candidate whose weights were chosen with labels: a classifying objective, or tune (trials chosen on val labels)."""
    return stage not in OBJECTIVES or not OBJECTIVES[stage].probed


def best_candidate(rows: list[dict], promote_from: list[str] | None = None) -> dict:
    """The registered candidate of ``promote_from`` (default: the self-supervised objectives) with the highest
    PROMOTION_METRIC (ties: the first row, in OBJECTIVES order)."""
    allowed = default_promote_from() if promote_from is None else promote_from
    ranked = [row for row in rows if row["version"] and row.get(PROMOTION_METRIC) is not None and row["stage"] in allowed]
    if not ranked:
        raise RegistryError(f"no candidate of this run among promote_from ({','.join(allowed)}) logged {PROMOTION_METRIC}; "
                            "nothing to promote")
    return max(ranked, key=lambda row: row[PROMOTION_METRIC])


def promote_best(rows: list[dict], stage: str, run_id: str, promote_from: list[str] | None = None,
                 rescored: dict[str, float] | None = None, beyond_noise: bool = False,
                 interval: tuple[float, float] | None = None):
    """(best row, outcome): the best candidate goes to staging, and to ``stage`` only if it beats the holder
    (``rescored``: versions' PROMOTION_METRIC measured again on this run's probe set, used instead of the logged;
    ``beyond_noise``: and only if ``interval``, the difference's 95 % interval, lies above 0: ``registry.promote``)."""
    best = best_candidate(rows, promote_from)
    reason = f"best {PROMOTION_METRIC} of main run {run_id}"
    registry.promote(best["version"], "staging", reason=reason)
    return best, registry.promote(best["version"], stage, if_better=PROMOTION_METRIC, reason=reason, rescored=rescored,
                                  beyond_noise=beyond_noise, interval=interval)


@dataclass
class GateEvidence:
    """What main's gate compares: the candidate and the holder scored on this run's probe set, and how far the
    val split's own sampling moves their difference."""

    candidate: str
    holder: str | None
    rescored: dict[str, float]  # {version: PROMOTION_METRIC on this run's probe set}; {} when not scored
    interval: tuple[float, float] | None = None  # 95 % paired bootstrap interval of candidate − holder on val
    n_val: int = 0

    def sentence(self) -> str:
        """One line for the terminal and the report ("" when nothing was scored)."""
        if self.interval is None:
            return ""
        low, high = self.interval
        difference = self.rescored[self.candidate] - self.rescored[self.holder]
        where = "beyond" if low > 0 or high < 0 else "within"
        return (f"{PROMOTION_METRIC} of version {self.candidate} − version {self.holder} on the probe set: "
                f"{difference:+.4f}, 95 % paired bootstrap interval [{low:+.4f}, {high:+.4f}] over its {self.n_val} "
                f"val images: {where} the val split's noise")

    def metrics(self) -> dict[str, float]:
        if self.interval is None:
            return {}
        return {"gate/difference": self.rescored[self.candidate] - self.rescored[self.holder],
                "gate/difference_low": self.interval[0], "gate/difference_high": self.interval[1]}


def gate_evidence(candidate: str, stage: str, probe_dataset: str, seed: int, device: str,
                  speaker: str = "[main]") -> GateEvidence:
    """Version ``candidate`` and ``stage``'s holder scored again on ``probe_dataset``, as the stages score a
    candidate (``dlfm.evaluation.probe_score``, this run's seed): one quantity even when the holder logged
    PROMOTION_METRIC on another probe set or by another probe (``registry.probe_mismatch``), and paired, so the
    val split's noise is measured. Nothing is scored without another holder. A holder that cannot be loaded or
    cannot read the set (not dlfm-made, its grid) is named; the gate then compares logged numbers, and keeps a holder
    whose number is another quantity."""
    holder = registry.version_for_stage(stage)
    if holder is None or holder == candidate:
        return GateEvidence(candidate, holder, {})
    from dlfm.evaluation.probe_score import paired_interval, probe_outputs
    from dlfm.sources.resolve import load_dataset

    mismatch = registry.probe_mismatch(registry.get_version(candidate), registry.get_version(holder), PROMOTION_METRIC)
    why = f"{mismatch}; " if mismatch else ""
    print(f"{speaker} {why}scoring version {candidate} and {stage} version {holder} on probe set {probe_dataset}",
          flush=True)
    try:
        dataset = load_dataset(probe_dataset)
        # This run's candidate passes every check (promote makes them again); the holder is only read, so an older
        # dlfm's version (carried code not the installed dlfm's) is scored on its weights, never running that code.
        encoders = {candidate: registry.load_registered_encoder(f"models:/{registry.MODEL_NAME}/{candidate}"),
                    holder: registry.load_registered_weights(f"models:/{registry.MODEL_NAME}/{holder}")}
        outputs = {version: probe_outputs(encoder, dataset, seed, device, scored=("val",))["val"]
                   for version, encoder in encoders.items()}
    except DlfmError as error:
        print(f"{speaker} versions {candidate} and {holder} could not both be scored again ({error}); the gate compares "
              "logged numbers", flush=True)
        return GateEvidence(candidate, holder, {})
    rescored = {version: output.metrics["val/macro_auc"] for version, output in outputs.items()}
    evidence = GateEvidence(candidate, holder, rescored, paired_interval(outputs[candidate], outputs[holder]),
                            len(outputs[candidate].labels))
    print(f"{speaker} {evidence.sentence()}", flush=True)
    return evidence


def summary_metrics(rows: list[dict], promoted: str, evaluate_metrics: dict[str, float]) -> dict[str, float]:
    """The parent run's own metrics, so its chart view is not empty while the children are collapsed:
    each stage's probe and head val AUC, the evaluated version and evaluate's verdict metrics (ratios, gains)."""
    metrics = {f"{row['stage']}/{name.replace('/', '_')}": row[name] for row in rows
               for name in (PROMOTION_METRIC, "val/macro_auc") if row.get(name) is not None}
    metrics["promoted_version"] = float(promoted)
    metrics.update({f"evaluate/{k.replace('/', '_')}": v for k, v in evaluate_metrics.items()})
    return metrics


def format_value(value) -> str:
    return "" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def write_report(config: MainConfig, rows: list[dict], best: dict, outcome, evaluate_run,
                 evidence: GateEvidence | None = None, spread: dict | None = None) -> str:
    """Markdown summary (stages, promotion, evaluation tables and verdicts) plus figures in ``config.report_dir``.

    Written into a fresh directory that replaces the previous report in one rename.
    """
    return write_report_dir(config.report_dir,
                            lambda out: _write_report_files(out, config, rows, best, outcome, evaluate_run, evidence,
                                                               spread))


def _write_report_files(out: Path, config: MainConfig, rows, best, outcome, evaluate_run, evidence=None,
                        spread=None) -> str:
    (out / "figures").mkdir(parents=True)
    columns = ["stage", "run", "version", *SUMMARY_METRICS]
    saw_labels = evaluate_run.data.tags.get("dlfm.encoder_saw_labels") == "true"
    count = evaluate_run.data.tags.get("dlfm.encoder_label_count", "?")
    opening = ([f"**The evaluated encoder saw labels:** version {best['version']} ({best['stage']}) was trained on {count} "
                "labelled images; its evaluation is a labelled upper bound, not label-free pretraining "
                "(promote_from includes labelled objectives).", ""] if saw_labels else [])
    lines = ["# dlfm main pipeline report", "", *opening, "## Training stages (same data, encoder, epochs, seed)", "",
             f"Promotion candidates (promote_from): {config.promote_from}. Stages marked *labelled upper bound* trained on "
             "the model_ii labels (and chose their epoch on its val labels): they are references, not pretraining.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        mark = {"stage": " (labelled upper bound)" if labelled(row["stage"]) else ""}
        lines.append("| " + " | ".join(format_value(row.get(c)) + mark.get(c, "") for c in columns) + " |")
    promoted, holder = best["version"], registry.version_for_stage(config.promote_stage)
    lines += ["", "## Promotion", "", "Rule: " + PROMOTION_RULE.format(stage=f"`{config.promote_stage}`", metric=PROMOTION_METRIC,
                                                                              gate=GATE_WORDS[config.gate])
              + ". `val/macro_auc` is a head's AUC for supervised and multitask, a probe's for autoencoder and mae: "
              "not one quantity, so it does not rank.", "",
              f"- best by {PROMOTION_METRIC}: {best['stage']} (version {promoted}, {best[PROMOTION_METRIC]:.4f})",
              f"- {outcome.message}", *([f"- {evidence.sentence()}"] if evidence and evidence.sentence() else []),
              f"- `{config.promote_stage}` now holds version {holder}", "",
              f"## Evaluation of version {promoted} (budgets {config.eval_budgets}, arms {config.eval_arms}, seeds {config.seeds})",
              ""]
    table_path = tracking.download_run_artifacts(evaluate_run.info.run_id, "evaluation.md", out)
    lines.append(Path(table_path).read_text().strip().replace("# Label-efficiency evaluation", "", 1).replace("\n## ", "\n### "))
    for figure in ("label_efficiency.png", "label_efficiency_regression.png"):
        tracking.download_run_artifacts(evaluate_run.info.run_id, f"figures/{figure}", out / "figures")
    lines += ["", "Figures: `figures/label_efficiency.png` (headline metric against labels, ±1 sd bands over seeds; "
              "under each panel the verdicts with their 95% CIs), "
              "`figures/label_efficiency_regression.png` (MAE per lens parameter).", ""]
    if spread is not None:
        lines += corpus_spread.markdown(spread)
        if len(spread["draws"]) > 1 and not spread.get("note"):
            import matplotlib.pyplot as plt

            from dlfm.plots.evaluation import corpus_spread_figure

            figure = corpus_spread_figure(spread)
            figure.savefig(out / "figures" / "corpus_spread.png", dpi=130)
            plt.close(figure)
            lines += ["Figure: `figures/corpus_spread.png` (each corpus's difference, their mean and both intervals, "
                      "per budget; the word over corpora above each).", ""]
    report = "\n".join(lines)
    (out / "report.md").write_text(report)
    Path(table_path).unlink(missing_ok=True)
    return report
