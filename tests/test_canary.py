"""End to end: a canary password given the documented way reaches no output, param, tag, artifact or store file.

A real tune run through `dlfm run` (that is, `mlflow run`) on a real PostgreSQL Optuna storage whose
URL, password included, comes from the environment (`-P storage=env:OPTUNA_STORAGE`). PostgreSQL
at 127.0.0.1:5432 trusts local connections, so the password is carried everywhere but never needed.
Everything the run leaves is then searched for the password, raw and percent-encoded: stdout,
stderr, every run's params and tags, and every byte under the working directory (the SQLite
tracking store and all artifacts, figures and checkpoints included).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import REPO, run_script

PASSWORD = f"Cn@ry/p%w0rd-{uuid.uuid4().hex[:10]}"  # raw @ / % : the forms that leaked before issue 10


def leaks(text_or_bytes, forms: list[str]) -> list[str]:
    haystack = text_or_bytes if isinstance(text_or_bytes, bytes) else text_or_bytes.encode()
    return [form for form in forms if form.encode() in haystack]


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.services
def test_canary_password_of_the_tune_storage_leaks_nowhere(tracking_uri, tiny_classification_dir, tmp_path, postgres_storage):
    import mlflow
    from mlflow.entities import ViewType

    forms = [PASSWORD, quote(PASSWORD, safe=""), PASSWORD.split("-")[-1]]  # raw, percent-encoded, its random tail
    storage = f"postgresql://postgres:{quote(PASSWORD, safe='')}@127.0.0.1:5432/{postgres_storage.rsplit('/', 1)[1]}"
    result = run_script(
        ["-m", "dlfm.cli", "run", str(REPO), "-e", "tune", "--experiment-name", "canary",
         "-P", f"dataset={tiny_classification_dir}", "-P", "encoder=conv4", "-P", "epochs=1", "-P", "batch_size=4",
         "-P", "n_trials=2", "-P", "storage=env:OPTUNA_STORAGE", "-P", "study_name=canary"],
        cwd=tmp_path, env_extra={"OPTUNA_STORAGE": storage, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"},
        timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]

    found = {"stdout": leaks(result.stdout, forms), "stderr": leaks(result.stderr, forms)}
    client = mlflow.MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)])
    assert len(runs) >= 3  # the tune run and its two trials
    for run in runs:
        found[f"run {run.info.run_id} params/tags"] = leaks(repr(run.data.params) + repr(run.data.tags), forms)
    files = [path for path in Path(tmp_path).rglob("*") if path.is_file()]
    assert any(path.suffix == ".png" for path in files) and any(path.name == "mlflow.db" for path in files)
    for path in files:  # the store, every artifact (figures, trials.json, encoders, checkpoints), the dataset copy
        found[str(path.relative_to(tmp_path))] = leaks(path.read_bytes(), forms)
    leaked = {where: forms for where, forms in found.items() if forms}
    print(f"canary: searched stdout, stderr, {len(runs)} runs' params and tags, {len(files)} files: {len(leaked)} leaks")
    assert leaked == {}, leaked
    assert len(found) > 10  # something was searched
