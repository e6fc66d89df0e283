"""The results page is rendered from runs: from a tiny real `main` run's store (tests/test_main.py's pipeline calls
check_page_of_the_newest_main_run, so the suite runs that pipeline once), twice the same bytes, the runs' own numbers,
commands the docs checker accepts, and a site that still builds strict."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import mlflow

from conftest import REPO, run_script


def render(tmp_path, name: str) -> str:
    result = run_script(["-m", "dlfm.docs_results", "--out", str(tmp_path / name)], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return (tmp_path / name).read_bytes().decode()


def section(page: str, heading: str) -> str:
    return page.split(heading + "\n", 1)[1].split("\n## ", 1)[0]


def row_of(text: str, first_cell: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    return line


def check_page_of_the_newest_main_run(tmp_path, experiment: str) -> None:
    """The results page rendered from a store that holds a real `main` run (tests/test_main.py's pipeline, which
    runs a second pretraining corpus): twice the same bytes, each step's run, the runs' own numbers, a command the
    docs checker accepts, and a site that still builds strict."""
    from test_docs import check_docs

    first, second = render(tmp_path, "a.md"), render(tmp_path, "b.md")
    assert first == second, "rendering the same store twice must give the same bytes"

    client = mlflow.MlflowClient()
    main = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "tags.`dlfm.stage` = 'main'",
                              order_by=["attributes.start_time DESC"])[0]
    steps = {k[len("dlfm.step."):]: client.get_run(v) for k, v in main.data.tags.items() if k.startswith("dlfm.step.")}
    assert {"simulate-model_ii", "simulate-regression", "simulate-pretrain", "simulate-held_out", "autoencoder", "mae",
            "supervised", "multitask", "evaluate", "simulate-pretrain-corpus-2000", "autoencoder-corpus-2000",
            "mae-corpus-2000", "evaluate-corpus-2000"} == set(steps)
    runs = section(first, "## Runs")
    for run in [main, *steps.values()]:
        assert f"`{run.info.run_id}`" in runs
    assert f"`{main.data.tags['mlflow.source.git.commit'][:10]}`" in runs and main.data.tags["dlfm.hardware"] in runs
    assert "**Not the demo's size:**" in runs and "n_train=12 (demo 1200)" in runs

    encoders = section(first, "## Encoder versions")
    for stage in ("autoencoder", "mae", "supervised", "multitask"):
        metrics = steps[stage].data.metrics
        line = row_of(encoders, stage + (" (labelled upper bound)" if stage in ("supervised", "multitask") else ""))
        assert f"| {steps[stage].data.tags['dlfm.registered_version']} |" in line
        assert f"{metrics['val/probe_macro_auc']:.4f}" in line and f"{metrics['val/macro_auc']:.4f}" in line
    assert "| none |" in row_of(encoders, "autoencoder")  # label provenance: the autoencoder's weights saw no labels
    assert f"version {main.data.tags['dlfm.promoted_version']}" in section(first, "## Promotion")

    evaluate = steps["evaluate"].data
    evaluation = section(first, "## Evaluate")
    assert "which saw no labels" in evaluation
    checked = 0
    for name, value in evaluate.metrics.items():
        if name.startswith("verdict_diff/"):  # verdict_diff/<task>/<budget>/<treated>-vs-<control>
            task, budget, pair = name.split("/")[1:]
            treated, control = pair.split("-vs-")
            table = evaluation.split(f"### {task}:", 1)[1].split("\n### ", 1)[0]
            line = next(line for line in table.splitlines() if line.startswith(f"| {budget} (") and f"{treated} − {control}" in line)
            assert f"{value:+.4f}" in line and evaluate.tags[f"dlfm.verdict.{task}/{budget}/{pair}"] in line
            checked += 1
        elif name.count("/") == 3 and name.startswith("test/"):  # <headline>/<arm>/<budget>: the mean over seeds
            headline, arm, budget = name.rsplit("/", 2)
            table = next(t for t in evaluation.split("\n### ")[1:] if t.split("\n", 1)[0].split(": ", 1)[1].startswith(headline))
            header = next(line for line in table.splitlines() if line.startswith("| budget"))
            column = [c.strip() for c in header.strip("|").split("|")].index(arm)
            line = next(line for line in table.splitlines() if line.startswith(f"| {budget} ("))
            assert [c.strip() for c in line.strip("|").split("|")][column].startswith(f"{value:.4f} ± ")
            checked += 1
    assert checked >= 8  # 2 tasks × 2 budgets × (2 arms + 1 verdict), at least
    # main's corpus_spread.json, in the words of its report
    corpora = section(first, "## Over pretraining corpora")
    assert "| quantity | corpus 1000 | corpus 2000 |" in corpora
    for name, value in main.data.metrics.items():
        if name.startswith("corpora/verdict_diff_") and name.endswith("_mean"):
            assert f"| {value:+.4f} ± " in corpora
    assert f"--experiment-name {experiment}" in section(first, "## Command")

    _, problems = check_docs(first)
    assert not problems, problems  # the command at the end names main's real params

    site = tmp_path / "site-src"
    shutil.copytree(REPO / "docs", site / "docs")
    shutil.copy(REPO / "mkdocs.yml", site / "mkdocs.yml")
    (site / "docs" / "results.md").write_text(first)
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                           cwd=site, capture_output=True, text=True, timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]


def test_a_store_without_a_main_run_is_one_clear_error(tracking_uri, tmp_path):
    result = run_script(["-m", "dlfm.docs_results", "--out", "results.md"], cwd=tmp_path, timeout=300)
    assert result.returncode == 2 and not (tmp_path / "results.md").exists()
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("dlfm: error: no FINISHED main run in the tracking store") and "make demo" in line


def test_the_committed_page_is_a_rendered_one():
    from dlfm.docs_results import PAGE, REGENERATE

    page = (REPO / PAGE).read_text()
    assert page.startswith("# Results\n") and REGENERATE in page and "](results-log.md)" in page
    gpu = page.split("## GPU figures", 1)[1]  # issue 27: the GPU figures' exact commands, on the page itself
    for script in ("benchmarks/gpu_report.sh", "benchmarks/gpu_throughput.py", "benchmarks/vit_mae_learns.sh"):
        assert script in gpu and (REPO / script).exists()
    for report in re.findall(r"\]\((results/gpu-[\d-]+\.md)\)", gpu):
        assert (REPO / "docs" / report).exists()
    assert (REPO / "docs" / "results-log.md").read_text().startswith("# Results log\n")
