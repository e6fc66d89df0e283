"""Entry point `mlflow run . -e anomaly`: score images by how unlike the pretraining corpus they are.

Reads: models:/dlfm-encoder@<encoder_stage> (or encoder_uri), resolved to one version; the corpus
(default the `pretrain` preset) and, per seed, held-out model_ii images and each anomaly kind's
images (simulated presets, cached under data/).
Writes: AUROC metrics per kind and score, anomaly_table.md, anomaly_scores.csv, anomaly.json and
figures/anomaly_<kind>.png on one run.
"""

from dlfm.entrypoint import ParamParser, config_from_args, run_entry_point
from dlfm.project_spec import add_entry_point_params


def main() -> None:
    from dlfm.anomaly import AnomalyConfig
    from dlfm.stages.anomaly import run_anomaly_stage

    parser = ParamParser(prog="pipelines/anomaly.py", description="Anomaly scores of a registered encoder.")
    add_entry_point_params(parser, "anomaly")
    summary = run_anomaly_stage(config_from_args(AnomalyConfig, parser.parse_args()))
    print(f"anomaly run {summary['run_id']} (encoder version {summary['version']}), AUROC anomalous vs normal:")
    print(summary["markdown"])


if __name__ == "__main__":
    run_entry_point(main)
