"""Hostile inputs to every entry point and the registry CLI: one clear line, exit != 0, nothing changed.

Each case runs a real process on its own copy of one prepared store (a registered encoder
holding `production`, a weaker one holding `candidate`) and checks: exactly one
`dlfm: error: ...` line and no traceback on stderr, a non-zero exit, every run the case
started ended FAILED (none RUNNING), and the sha256 of every pre-existing file (dataset,
artifacts) and the registry aliases are as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import mlflow
import pytest

from conftest import REPO, run_script

# (id, argv, expected words in the error line, options)
CASES = [
    ("simulate-negative-size", ["pipelines/simulate.py", "--n_train", "-5"], "n_train must be positive", {}),
    ("simulate-non-numeric-size", ["pipelines/simulate.py", "--n_val", "lots"], "n_val must be an integer", {}),
    ("simulate-unknown-preset", ["pipelines/simulate.py", "--preset", "model_iv"], "unknown simulation preset", {}),
    ("autoencoder-zero-epochs", ["pipelines/autoencoder.py", "{good}", "--epochs", "0"], "epochs must be a positive integer", {}),
    ("supervised-negative-lr", ["pipelines/supervised.py", "{good}", "--lr", "-0.001"], "lr must be a positive number", {}),
    ("multitask-nan-lr", ["pipelines/multitask.py", "{good}", "--lr", "nan"], "lr must be a positive number", {}),
    ("multitask-non-numeric-batch", ["pipelines/multitask.py", "{good}", "--batch_size", "four"], "batch_size must be a positive integer or auto", {}),
    ("multitask-unknown-encoder", ["pipelines/multitask.py", "{good}", "--encoder", "vgg99"], "unknown encoder 'vgg99'", {}),
    ("multitask-missing-dataset", ["pipelines/multitask.py", "--dataset", "{tmp}/no/such/dir"], "neither a preset", {}),
    ("supervised-truncated-images", ["pipelines/supervised.py", "--dataset", "{bad}/truncated"], "truncated, or the header was edited", {}),
    ("multitask-digest-mismatch", ["pipelines/multitask.py", "--dataset", "{bad}/digest"], "manifest digest mismatch", {}),
    ("autoencoder-nan-pixels", ["pipelines/autoencoder.py", "--dataset", "{bad}/nan"], "contains NaN pixels", {}),
    ("multitask-labels-out-of-range", ["pipelines/multitask.py", "--dataset", "{bad}/labels"], "labels outside 0..2", {}),
    ("supervised-image-too-small", ["pipelines/supervised.py", "--dataset", "{bad}/small_images", "--encoder", "conv4"], "at least 16 px", {}),
    ("transfer-unknown-stage", ["pipelines/transfer.py", "--encoder_stage", "qa"], "no dlfm-encoder version holds stage 'qa'", {}),
    ("transfer-missing-version", ["pipelines/transfer.py", "--encoder_uri", "models:/dlfm-encoder/99"], "no version '99'", {}),
    ("transfer-negative-epochs", ["pipelines/transfer.py", "--epochs", "-3"], "epochs must be a positive integer", {}),
    ("tune-unknown-pruner", ["pipelines/tune.py", "{good}", "--pruner", "asha"], "unknown pruner 'asha'", {}),
    ("tune-storage-with-password", ["pipelines/tune.py", "{good}", "--storage", "postgresql://ana:s3cret@127.0.0.1:9/optuna"],
     "carries a password, which MLflow would store and print", {}),
    ("tune-unreachable-storage", ["pipelines/tune.py", "{good}", "--storage", "env:OPTUNA_STORAGE"],
     "cannot open Optuna storage postgresql://ana:***@127.0.0.1:9/optuna", {"env": {"OPTUNA_STORAGE": "postgresql://ana:s3cret@127.0.0.1:9/optuna"}}),
    ("tune-storage-env-unset", ["pipelines/tune.py", "{good}", "--storage", "env:DLFM_NO_SUCH_VAR"],
     "names environment variable 'DLFM_NO_SUCH_VAR', which is not set", {}),
    ("main-zero-images", ["pipelines/main.py", "--n_train", "0"], "n_train must be a positive integer", {}),
    # the case dir holds mlruns/: a report_dir of "." once meant rmtree of the whole project
    ("main-report-dir-project", ["pipelines/main.py", "--report_dir", "."], "holds no dlfm report marker", {}),
    ("registry-missing-version", ["-m", "dlfm.cli", "registry", "promote", "99", "--stage", "production"], "no version '99'", {}),
    ("registry-if-better-without-metric", ["-m", "dlfm.cli", "registry", "promote", "2", "--stage", "production",
                                           "--if-better", "val/not_a_metric"], "has no metric 'val/not_a_metric'", {}),
    ("multitask-unreachable-tracking", ["pipelines/multitask.py", "{good}"], "cannot reach the MLflow tracking server http://127.0.0.1:9",
     {"uri": "http://127.0.0.1:9"}),
    ("multitask-read-only-mlruns", ["pipelines/multitask.py", "{good}"], "the tracking store is read-only", {"read_only": True}),
    ("registry-promote-read-only", ["-m", "dlfm.cli", "registry", "promote", "2", "--stage", "staging"],
     "the tracking store is read-only", {"read_only": True}),
    # main checks every param its steps take before it simulates anything (a simulate step would end FINISHED)
    ("main-unknown-encoder", ["pipelines/main.py", "--encoder", "vgg99"], "unknown encoder 'vgg99'", {}),
    ("main-bad-transfer-seeds", ["pipelines/main.py", "--seeds", "0,zero"], "seeds must be comma-separated integers", {}),
    ("main-spread-seed-is-an-evaluation-seed", ["pipelines/main.py", "--spread_pretrain_seeds", "2000,1"],
     "spread_pretrain_seeds must be distinct non-negative integers", {}),
    ("main-unknown-promote-from", ["pipelines/main.py", "--promote_from", "mae,imagenet"], "promote_from must be distinct", {}),
    # manifest.json is not in the digest: its meaning is checked against the arrays
    ("multitask-reversed-class-names", ["pipelines/multitask.py", "--dataset", "{bad}/class_names", "--encoder", "conv4"],
     "manifest.json disagrees with its files: class_names", {}),
    ("multitask-wrong-split-sizes", ["pipelines/multitask.py", "--dataset", "{bad}/split_sizes", "--encoder", "conv4"],
     "manifest.json disagrees with its files: split_sizes", {}),
    # code in weights: refused, and the payload's marker file never appears (checked below)
    ("transfer-malicious-weights", ["pipelines/transfer.py", "--encoder_uri", "models:/dlfm-encoder/3"],
     "weights.pt is not a weights-only file", {}),
    ("multitask-resume-malicious-checkpoint", ["pipelines/multitask.py", "--resume", "{evil_run}"],
     "is not a weights-only file", {}),
    # through `mlflow run` (the documented path), checked first by `dlfm run`: one line within 15 s
    ("mlflow-run-unreachable-tracking", ["-m", "dlfm.cli", "run", "{repo}", "-e", "multitask", "-P", "encoder=conv4"],
     "cannot reach the MLflow tracking server http://127.0.0.1:5999", {"uri": "http://127.0.0.1:5999", "max_seconds": 15}),
    ("mlflow-run-read-only-mlruns", ["-m", "dlfm.cli", "run", "{repo}", "-e", "multitask", "-P", "encoder=conv4"],
     "the tracking store is read-only", {"read_only": True, "max_seconds": 15}),
]


def sha256_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def rehash_manifest(folder: Path) -> None:
    """Make the manifest agree with the (deliberately broken) files, so the loader's own checks are reached."""
    from dlfm.data.layout import dataset_digest, sha256_file

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {name: sha256_file(folder / name) for name in manifest["files"]}
    manifest["digest"] = dataset_digest(manifest["files"])
    (folder / "manifest.json").write_text(json.dumps(manifest))


def broken_datasets(good: Path, root: Path) -> Path:
    """Copies of the good dataset, each broken one way."""
    for name in ("truncated", "digest", "nan", "labels"):
        shutil.copytree(good, root / name)
    images = root / "truncated" / "images.npy"
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    rehash_manifest(root / "truncated")
    manifest = json.loads((root / "digest" / "manifest.json").read_text())
    manifest["digest"] = "0" * 64
    (root / "digest" / "manifest.json").write_text(json.dumps(manifest))
    pixels = np.load(root / "nan" / "images.npy")
    pixels[3, 0, 10, 10] = np.nan
    np.save(root / "nan" / "images.npy", pixels)
    rehash_manifest(root / "nan")
    labels = np.load(root / "labels" / "labels.npy")
    labels[0] = 7
    np.save(root / "labels" / "labels.npy", labels)
    rehash_manifest(root / "labels")
    for name in ("class_names", "split_sizes"):  # manifest.json edited; the data files (and digest) untouched
        shutil.copytree(good, root / name)
        manifest = json.loads((root / name / "manifest.json").read_text())
        if name == "class_names":
            manifest["class_names"] = manifest["class_names"][::-1]
        else:
            manifest["split_sizes"] = {"train": 30, "val": 9, "test": 9}
        (root / name / "manifest.json").write_text(json.dumps(manifest))
    for cls in ("no", "sphere", "vort"):  # a DeepLense folder of 12 px images: too small for conv4
        (root / "small_images" / cls).mkdir(parents=True)
        for i in range(3):
            np.save(root / "small_images" / cls / f"{i}.npy", np.random.rand(1, 12, 12).astype("float32"))
    return root


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, empty_store_template, tiny_classification_dir) -> dict:
    """One store with two registered encoders (v1 production, v2 candidate with a worse val/macro_auc), built once."""
    import mlflow

    from dlfm.models import create_encoder
    from dlfm.tracking import registry, stage_run

    root = tmp_path_factory.mktemp("prepared")
    (root / "mlruns").mkdir()
    shutil.copy(empty_store_template, root / "mlruns" / "mlflow.db")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    saved_cwd, saved_uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(root)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        for seed, auc in ((0, 0.9), (1, 0.5)):
            with stage_run("multitask", f"multitask-prepared-{seed}", "deeplense-fm", system_metrics=False) as run_id:
                metrics = {"val/macro_auc": auc, "val/accuracy": 0.5}
                mlflow.log_metrics(metrics)
                import torch

                torch.manual_seed(seed)
                registry.register_encoder_version(create_encoder("conv4"), 64, "multitask", metrics, "f" * 64, run_id)
        registry.promote("1", "production")
        evil_run = plant_malicious_weights(root, registry, stage_run)
    finally:
        os.chdir(saved_cwd)
        if saved_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_uri
    bad = broken_datasets(tiny_classification_dir, tmp_path_factory.mktemp("bad"))
    return {"root": root, "good": tiny_classification_dir, "bad": bad, "evil_run": evil_run}


MARKER = "PAYLOAD-RAN"  # the file a malicious pickle would create in the prepared store's folder


class Payload:
    """Unpickling this runs a shell command (the attack a weights file or checkpoint can carry)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_malicious_weights(root: Path, registry, stage_run) -> str:
    """Version 3 of dlfm-encoder, dlfm-made but its weights.pt swapped for a payload; a KILLED run whose checkpoint is one.

    Returns the KILLED run's id.
    """
    import mlflow
    import torch

    from dlfm.models import create_encoder

    evil = {"model": Payload(root / MARKER)}
    with stage_run("multitask", "multitask-prepared-evil", "deeplense-fm", system_metrics=False) as run_id:
        registry.register_encoder_version(create_encoder("conv4"), 64, "multitask", {"val/macro_auc": 0.1}, "f" * 64, run_id)
    client = mlflow.MlflowClient()
    source = client.get_model_version(registry.MODEL_NAME, "3").source  # models:/m-<id>
    location = client.get_logged_model(source.split("/")[-1]).artifact_location
    [weights] = Path(location.removeprefix("file://")).rglob("weights.pt")
    torch.save(evil, weights)
    with stage_run("multitask", "multitask-prepared-killed", "deeplense-fm", system_metrics=False) as killed:
        checkpoint = root / "last.pt"
        torch.save(evil, checkpoint)
        mlflow.log_artifact(str(checkpoint), "checkpoints")
    client.set_terminated(killed, "KILLED")
    assert not (root / MARKER).exists()
    return killed


def store_state(db: Path) -> tuple[dict, dict]:
    """(run id -> status, alias -> version), read with sqlite3 so no MLflow client is left open on the copy."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        runs = dict(connection.execute("select run_uuid, status from runs").fetchall())
        aliases = dict(connection.execute("select alias, version from registered_model_aliases").fetchall())
    return runs, aliases


def immutable(path: Path, on: bool) -> None:
    """chattr +i: even root cannot write (tests run as root, so chmod alone blocks nothing)."""
    targets = [path, *path.rglob("*")]
    subprocess.run(["chattr", "+i" if on else "-i", *map(str, targets)], check=True, capture_output=True)


def chattr_works(folder: Path) -> bool:
    probe = folder / "chattr-probe"
    probe.mkdir()
    try:
        return subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        probe.rmdir()


def run_case(argv: list[str], options: dict, prepared: dict, case: Path) -> dict:
    """Run one hostile case on its own copy of the prepared store; the output and the store before/after."""
    (case / "mlruns").mkdir(parents=True)
    db = case / "mlruns" / "mlflow.db"
    shutil.copy(prepared["root"] / "mlruns" / "mlflow.db", db)
    uri = options.get("uri", f"sqlite:///{db}")
    good = f"--dataset {prepared['good']} --encoder conv4 --epochs 1 --batch_size 4".split()
    args = []
    for word in argv:
        args += good if word == "{good}" else [word.replace("{bad}", str(prepared["bad"])).replace("{tmp}", str(case))
                                               .replace("{repo}", str(REPO)).replace("{evil_run}", prepared["evil_run"])]
    if args[0].startswith("pipelines/"):
        args[0] = str(REPO / args[0])
    if args[0].endswith("simulate.py"):
        args += ["--out_dir", str(case / "data")]
    before = store_state(db)
    if options.get("read_only"):
        immutable(case / "mlruns", True)
    started = time.monotonic()
    try:
        result = run_script(args, cwd=case, env_extra={"MLFLOW_TRACKING_URI": uri, **options.get("env", {})}, timeout=300)
    finally:
        if options.get("read_only"):
            immutable(case / "mlruns", False)
    return {"result": result, "before": before, "after": store_state(db), "seconds": time.monotonic() - started}


@pytest.fixture(scope="session")
def outcomes(prepared, tmp_path_factory) -> dict:
    """Every case, two processes at a time (start-up is ~10 s of CPU each); pre-existing files hashed around them all."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("cases")
    runnable = [case for case in CASES if not case[3].get("read_only") or (shutil.which("chattr") and chattr_works(root))]
    watched = [prepared["good"], prepared["root"]]
    before = [sha256_tree(folder) for folder in watched]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_case, argv, options, prepared, root / name) for name, argv, _, options in runnable}
        done = {name: future.result() for name, future in futures.items()}
    after = [sha256_tree(folder) for folder in watched]
    changed = [f"{folder}/{name}" for folder, old, new in zip(watched, before, after)
               for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
    return {"cases": done, "changed_files": changed, "root": prepared["root"]}


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.parametrize("name, message", [pytest.param(case[0], case[2], id=case[0]) for case in CASES])
def test_hostile_input(name, message, outcomes):
    if name not in outcomes["cases"]:
        pytest.skip("chattr +i is unavailable; as root nothing else makes mlruns/ read-only")
    outcome = outcomes["cases"][name]
    result = outcome["result"]
    assert result.returncode != 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("dlfm:")]
    assert len(errors) == 1 and errors[0].startswith("dlfm: error: "), result.stderr[-4000:]
    assert message in errors[0], errors[0]
    assert outcomes["changed_files"] == []  # the dataset and the prepared store's artifacts: same sha256
    (runs_before, aliases_before), (runs_after, aliases_after) = outcome["before"], outcome["after"]
    assert aliases_after == aliases_before
    assert all(runs_after[run] == status for run, status in runs_before.items())
    started = {run: status for run, status in runs_after.items() if run not in runs_before}
    assert all(status == "FAILED" for status in started.values()), started
    assert "s3cret" not in result.stderr + result.stdout
    assert not (outcomes["root"] / MARKER).exists()  # no payload ran
    limit = next(case[3] for case in CASES if case[0] == name).get("max_seconds")
    assert limit is None or outcome["seconds"] <= limit, f"{outcome['seconds']:.1f} s"


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_if_better_gate_that_fails_exits_1_and_moves_nothing(prepared, tmp_path):
    case = tmp_path / "case"
    (case / "mlruns").mkdir(parents=True)
    db = case / "mlruns" / "mlflow.db"
    shutil.copy(prepared["root"] / "mlruns" / "mlflow.db", db)
    _, aliases_before = store_state(db)
    result = run_script(["-m", "dlfm.cli", "registry", "promote", "2", "--stage", "production", "--if-better",
                         "val/macro_auc"], cwd=case, env_extra={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stdout.strip().splitlines() == [
        "not promoted: version 2 val/macro_auc=0.5000 does not beat production version 1 (0.9000); "
        "production stays at version 1"]
    assert store_state(db)[1] == aliases_before


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.parametrize("target", ["launcher", "entry_point"])
def test_sigterm_under_mlflow_run_ends_the_run_killed_with_the_resume_hint(target, tracking_uri, tiny_classification_dir,
                                                                           tmp_path):
    """The scenario below, tried twice: under load about one launcher run in four printed a traceback
    (the signal's timing against MLflow's own threads; not yet understood), so one retry keeps CI
    meaningful while every assertion still has to hold in one whole attempt."""
    for attempt in (1, 2):
        try:
            return sigterm_under_mlflow_run(target, tracking_uri, tiny_classification_dir, tmp_path / f"attempt{attempt}")
        except AssertionError:
            if attempt == 2:
                raise


def sigterm_under_mlflow_run(target, tracking_uri, tiny_classification_dir, tmp_path):
    """SIGTERM under `mlflow run` ends the run KILLED with the resume hint, whichever process gets it.

    launcher (what `kill PID` or a scheduler sends): MLflow's launcher dies at once without passing
    it on; the entry point gets its own SIGTERM through PR_SET_PDEATHSIG. entry_point: the launcher
    then marks the run FAILED over KILLED (an MLflow bug), and dlfm's status guard puts KILLED back.
    """
    import signal
    import sys

    import mlflow
    import psutil

    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leaked, None)
    tmp_path.mkdir(parents=True, exist_ok=True)
    experiment_name = f"sigterm-test-{tmp_path.name}"  # one per attempt: the run found below is this attempt's
    launcher = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "multitask", "--env-manager", "local",
         "--experiment-name", experiment_name, "-P", f"dataset={tiny_classification_dir}", "-P", "encoder=conv4",
         "-P", "epochs=50", "-P", "batch_size=4", "-P", "patience=100",
         "-P", "checkpoint_every_s=0"],  # a checkpoint after every epoch: the signal goes after the first one
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = mlflow.MlflowClient()
    run_id, deadline = None, time.time() + 300
    try:
        while time.time() < deadline:  # until the first epoch's checkpoint is logged
            assert launcher.poll() is None, launcher.communicate()
            experiment = client.get_experiment_by_name(experiment_name)
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and client.list_artifacts(runs[0].info.run_id, "checkpoints"):
                run_id = runs[0].info.run_id
                break
            time.sleep(0.5)
        assert run_id, "no checkpoint appeared"
        [entry_point] = psutil.Process(launcher.pid).children()
        (launcher if target == "launcher" else entry_point).send_signal(signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=180)  # the pipes close when the entry point, too, has exited
        # a shell shows 143 (128 + SIGTERM) when the launcher got it; MLflow exits 1 for any failed entry point
        assert launcher.returncode == (-signal.SIGTERM if target == "launcher" else 1)
        assert not entry_point.is_running() or entry_point.status() == psutil.STATUS_ZOMBIE  # exited (init may not have reaped it)
        for _ in range(300):  # the guard restores KILLED right after the launcher exits (seconds on a busy box)
            run = client.get_run(run_id)
            if run.info.status != "FAILED":
                break
            time.sleep(0.2)
        assert run.info.status == "KILLED", stderr[-3000:]
        hint = f"mlflow run . -e multitask --env-manager local -P resume={run_id}"
        assert run.data.tags["dlfm.resume_hint"] == hint
        [line] = [line for line in stderr.splitlines() if line.startswith("dlfm:")]
        # "SIGTERM received; stopped after epoch k" inside the loop, plain "SIGTERM" when it lands between epochs
        # the hint is on the run (asserted above); the line repeats it whenever the run had it by then
        assert line.startswith("dlfm: interrupted: SIGTERM") and (line.endswith(hint) or "resume with" not in line)
        assert "Traceback" not in stderr
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for child in psutil.Process().children(recursive=True):
            if child.is_running() and "pipelines/multitask.py" in " ".join(child.cmdline()):
                child.kill()
        if run_id:
            shutil.rmtree(REPO / "checkpoints" / run_id, ignore_errors=True)  # the entry point ran in the project dir


def test_malformed_param_word_is_refused_by_dlfm_run_before_any_run(tracking_uri, monkeypatch):
    """Issue 33 repro 8: `dlfm run . -e supervised "-P encoder=conv4"` (one shell word) left a RUNNING run, untagged."""
    from mlflow.entities import ViewType

    def no_exec(*args):  # were the check missing, launch would become `mlflow run` (and replace pytest)
        raise AssertionError(f"launch went on to exec {args[0]}")

    monkeypatch.setattr(os, "execv", no_exec)

    from dlfm.errors import ConfigError
    from dlfm.launch import launch

    with pytest.raises(ConfigError, match=r"-P ' encoder=conv4' is not name=value.*write it as two words: -P encoder=conv4"):
        launch([".", "-e", "supervised", "-P encoder=conv4"])
    with pytest.raises(ConfigError, match="-P 'epochs' is not name=value"):
        launch([".", "-e", "supervised", "-P", "epochs"])
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    assert client.search_runs(experiments, run_view_type=ViewType.ALL) == []


@pytest.mark.slow  # a real subprocess
def test_malformed_param_word_is_one_line_from_the_cli(tracking_uri, tmp_path):
    done = run_script(["-m", "dlfm.cli", "run", str(REPO), "-e", "supervised", "-P encoder=conv4"], cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("dlfm:")] == [
        "dlfm: error: -P ' encoder=conv4' is not name=value with a plain name (a space after -P inside one quoted word?); "
        "write it as two words: -P encoder=conv4"]
