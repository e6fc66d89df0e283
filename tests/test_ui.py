"""The MLflow UI as a person sees it: a real `mlflow ui` and a real headless Chromium (Playwright).

A tiny pipeline (the three training stages on conv4, one promoted to `production`) fills a
temporary store; the browser then opens the run list, the compare view of the three stages, a
figure in a run's Artifacts tab and the registered model page with its `@production` alias.
Screenshots land in the test's tmp dir (and in ``$DLFM_UI_SCREENSHOTS`` when set, to look at).

Skips with the reason when Playwright or Debian's ``chromium`` is absent (no browser download:
Playwright drives the system Chromium through its executable path). ``.ci/run`` installs both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, spawn_process_group, stop_process_group, wait_for_http

pytestmark = pytest.mark.slow

STAGES = ("autoencoder", "supervised", "multitask")


def chromium_path() -> str | None:
    """Debian's chromium (or an explicit DLFM_CHROMIUM), never a downloaded browser build."""
    for candidate in (os.environ.get("DLFM_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Playwright, or a skip saying what is missing."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[dev]')")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium executable (apt-get install chromium, or set DLFM_CHROMIUM)")
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def pipeline_store(tmp_path_factory, tiny_classification_dir):
    """A store holding the three stages' runs and a version promoted to `production`."""
    import mlflow

    from dlfm.stages.train import run_training_stage
    from dlfm.tracking import registry
    from dlfm.training import TrainConfig

    folder = tmp_path_factory.mktemp("ui-store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    previous_dir = os.getcwd()
    os.chdir(folder)  # artifacts go under ./mlruns beside the database
    os.environ["MLFLOW_TRACKING_URI"] = uri
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(leaked, None)
    mlflow.set_tracking_uri(uri)
    try:
        summaries = {}
        for stage in STAGES:
            config = TrainConfig(objective=stage, dataset=str(tiny_classification_dir), encoder="conv4", epochs=1, batch_size=8)
            summaries[stage] = run_training_stage(config, progress=False)
        registry.promote(summaries["supervised"]["version"], "production", reason="ui test")
        experiment = mlflow.MlflowClient().get_experiment_by_name("deeplense-fm")
        yield {"uri": uri, "folder": folder, "experiment_id": experiment.experiment_id, "summaries": summaries}
    finally:
        os.chdir(previous_dir)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"] or "")


@pytest.fixture(scope="module")
def ui_url(pipeline_store):
    """`mlflow ui` on the pipeline store, in its own process group, stopped after the module."""
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = spawn_process_group(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", pipeline_store["uri"], "--host", "127.0.0.1", "--port", str(port)],
        cwd=pipeline_store["folder"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", server, 90, "mlflow ui")
        yield url
    finally:
        stop_process_group(server)


def screenshot(page, tmp_path: Path, name: str) -> None:
    """Keep what the browser showed: in tmp_path, and in $DLFM_UI_SCREENSHOTS when set."""
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    keep = os.environ.get("DLFM_UI_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(keep) / f"{name}.png")


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(60_000)
    yield opened
    context.close()


def test_run_list_shows_every_stage(page, ui_url, pipeline_store, tmp_path):
    page.goto(f"{ui_url}/#/experiments/{pipeline_store['experiment_id']}/runs")
    for stage in STAGES:
        page.get_by_text(f"{stage}-conv4").first.wait_for()
    screenshot(page, tmp_path, "run_list")


def test_compare_view_of_the_three_stages(page, ui_url, pipeline_store, tmp_path):
    run_ids = [pipeline_store["summaries"][stage]["run_id"] for stage in STAGES]
    runs = ",".join(f'"{run_id}"' for run_id in run_ids)
    page.goto(f"{ui_url}/#/compare-runs?runs=[{runs}]&experiments=[\"{pipeline_store['experiment_id']}\"]")
    page.get_by_text("Comparing 3 Runs").first.wait_for()
    for stage in STAGES:
        page.get_by_text(f"{stage}-conv4").first.wait_for()
    screenshot(page, tmp_path, "compare")


def test_figure_in_artifacts(page, ui_url, pipeline_store, tmp_path):
    run_id = pipeline_store["summaries"]["multitask"]["run_id"]
    page.goto(f"{ui_url}/#/experiments/{pipeline_store['experiment_id']}/runs/{run_id}/artifacts")
    page.get_by_text("figures", exact=True).first.click()
    page.get_by_text("confusion.png").first.click()
    page.get_by_text("figures/confusion.png").first.wait_for()
    # The viewer shows the PNG from a blob: URL once fetched; a broken or missing file has no width.
    page.wait_for_function("() => [...document.images].some(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 100)")
    screenshot(page, tmp_path, "artifact_figure")


def test_model_page_shows_production_alias(page, ui_url, pipeline_store, tmp_path):
    page.goto(f"{ui_url}/#/models/dlfm-encoder")
    page.get_by_text("production").first.wait_for()
    version = pipeline_store["summaries"]["supervised"]["version"]
    page.get_by_text(f"Version {version}").first.wait_for()
    screenshot(page, tmp_path, "model_page")


def test_the_link_a_stage_prints_opens_its_run_in_the_model_training_view(page, ui_url, pipeline_store, tmp_path):
    """MLflow 3's UI starts in its GenAI view: an experiment opens on traces, and the sidebar has no Runs or Models.
    The link in a stage's closing lines (`view: mlflow ui …, then open …`) opens the run in the model-training view."""
    from dlfm.tracking.runs import UI_LOCAL_ADDRESS, run_location

    run_id = pipeline_store["summaries"]["multitask"]["run_id"]
    link = run_location(run_id)["view"].split(", then open ")[1]
    assert link.startswith(f"{UI_LOCAL_ADDRESS}/#/experiments/{pipeline_store['experiment_id']}/runs/{run_id}")
    page.goto(ui_url + link[len(UI_LOCAL_ADDRESS):])
    page.get_by_text("multitask-conv4").first.wait_for()
    page.get_by_role("link", name="Models", exact=True).first.wait_for()
    screenshot(page, tmp_path, "printed_link")
    page.goto(f"{ui_url}/#/experiments/{pipeline_store['experiment_id']}")  # the plain address, for contrast
    page.wait_for_url("**workflowType=genai**")
    assert page.get_by_role("link", name="Models", exact=True).count() == 0
