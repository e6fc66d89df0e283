"""Bring your own data: `dlfm dataset import` (any class names, stacked arrays, .npz, a parameter CSV), its
one-line refusals, and an unlabelled folder of .npy images as a pretraining corpus."""

from __future__ import annotations

import json
import os

import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, run_script
from dlfm.cli import main
from dlfm.data import verify_dataset_dir
from dlfm.sources import load_dataset
from dlfm.errors import DatasetError

SIZE = 32
CLASSES = ("spiral", "ring")  # not DeepLense names, and not in sorted order


def _class_folders(root, n_per_class=10, seed=0):
    """Class folders whose pixel values say the class: folder k holds images in [k, k+1)."""
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        k = sorted(CLASSES).index(name)
        for i in range(n_per_class):
            np.save(root / name / f"img{i:02d}.npy", (rng.random((SIZE, SIZE)) + k).astype(np.float32))
    return root


def _flat_folder(root, n=36, seed=1):
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.save(root / f"{i:03d}.npy", rng.random((1, SIZE, SIZE)))  # float64 and 1×H×W: both accepted
    return root


def _import(capsys, *args) -> tuple[int, str, str]:
    """Run `dlfm dataset import ARGS` in process; (exit code, stdout, stderr)."""
    code = 0
    try:
        main(["dataset", "import", *map(str, args)])
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def test_class_folders_with_any_names_import_verify_and_load(tmp_path, capsys):
    source = _class_folders(tmp_path / "mine")
    code, out, err = _import(capsys, source, "--out", tmp_path / "data" / "galaxies")
    assert code == 0, err
    target = tmp_path / "data" / "galaxies"
    assert sorted(p.name for p in target.iterdir()) == ["images.npy", "labels.npy", "manifest.json", "params.csv"]
    assert "classes ring, spiral" in out and f"-P dataset={target}" in out

    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["format"] == "dlfm-dataset" and manifest["task"] == "classification"
    assert manifest["class_names"] == ["ring", "spiral"] and manifest["image_size"] == SIZE and manifest["num_images"] == 20
    assert manifest["class_counts"]["train"] == {"ring": 6, "spiral": 6}  # stratified: round(10 * 0.15) = 2 val, 2 test
    assert verify_dataset_dir(target)["digest"] == manifest["digest"]

    dataset = load_dataset(target, normalize=False)  # the loader every stage uses, sha256-verified
    assert dataset.class_names == ("ring", "spiral") and dataset.images.shape == (20, 1, SIZE, SIZE)
    for split in ("train", "val", "test"):  # pixel values say the class: labels follow the folders
        means = dataset.get_images(split).mean(axis=(1, 2, 3))
        np.testing.assert_array_equal(np.floor(means).astype(int), dataset.get_labels(split))
    assert set(dataset.params["file"].str.split("/").str[0]) == set(CLASSES)
    assert list(dataset.params["split"]) == sorted(dataset.params["split"], key=("train", "val", "test").index)

    images = bytearray((target / "images.npy").read_bytes())  # one changed byte is caught before use
    images[-1] ^= 1
    (target / "images.npy").write_bytes(bytes(images))
    with pytest.raises(DatasetError, match="images.npy sha256 mismatch"):
        load_dataset(target)


def test_split_is_seeded_and_an_import_is_reproducible(tmp_path, capsys):
    source = _class_folders(tmp_path / "mine")
    splits = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 7)):
        assert _import(capsys, source, "--out", tmp_path / name, "--seed", seed)[0] == 0
        splits[name] = load_dataset(tmp_path / name).params.sort_values("file")["split"].tolist()
    assert splits["a"] == splits["b"] and splits["a"] != splits["c"]
    assert verify_dataset_dir(tmp_path / "a")["files"] == verify_dataset_dir(tmp_path / "b")["files"]  # byte-identical


def test_stacked_arrays_with_labels_and_class_names(tmp_path, capsys):
    rng = np.random.default_rng(2)
    labels = np.arange(30) % 3
    np.save(tmp_path / "images.npy", rng.random((30, SIZE, SIZE)).astype(np.float32) + labels[:, None, None])
    np.save(tmp_path / "labels.npy", labels)
    code, _, err = _import(capsys, tmp_path / "images.npy", "--labels", tmp_path / "labels.npy",
                           "--class-names", "elliptical,spiral,merger", "--out", tmp_path / "stack")
    assert code == 0, err
    dataset = load_dataset(tmp_path / "stack", normalize=False)
    assert dataset.class_names == ("elliptical", "spiral", "merger")
    assert np.bincount(dataset.get_labels("train")).tolist() == [6, 6, 6]
    np.testing.assert_array_equal(np.floor(dataset.images[:, 0].mean(axis=(1, 2))).astype(int), dataset.labels)
    np.testing.assert_array_equal(labels[dataset.params["source_index"]], dataset.labels)  # rows map back to the input

    # String labels name the classes themselves; an .npz carries images, labels and the user's split.
    split = np.array(["train"] * 20 + ["val"] * 5 + ["test"] * 5)
    np.savez(tmp_path / "arrays.npz", images=rng.random((30, 1, SIZE, SIZE)), labels=np.array(["lens", "none"] * 15),
             split=split)
    assert _import(capsys, tmp_path / "arrays.npz", "--out", tmp_path / "npz")[0] == 0
    dataset = load_dataset(tmp_path / "npz")
    assert dataset.class_names == ("lens", "none")
    assert dataset.manifest["split_sizes"] == {"train": 20, "val": 5, "test": 5}
    assert "the user's split" in dataset.manifest["split_rule"]
    np.savez(tmp_path / "ints.npz", images=rng.random((30, SIZE, SIZE)), labels=labels)  # integer members take --class-names
    assert _import(capsys, tmp_path / "ints.npz", "--class-names", "a,b,c", "--out", tmp_path / "ints")[0] == 0
    assert load_dataset(tmp_path / "ints").class_names == ("a", "b", "c")


def test_class_and_file_names_that_look_like_numbers_stay_text(tmp_path, capsys):
    for name in ("01", "2"):
        (tmp_path / "mine" / name).mkdir(parents=True)
        for i in range(6):
            np.save(tmp_path / "mine" / name / f"{i:03d}.npy", np.full((SIZE, SIZE), float(i)))
    assert _import(capsys, tmp_path / "mine", "--out", tmp_path / "out")[0] == 0
    dataset = load_dataset(tmp_path / "out")
    assert dataset.class_names == ("01", "2") and dataset.params["file"].str.endswith(".npy").all()
    assert set(dataset.params["class_name"]) == {"01", "2"}


def test_parameter_csv_makes_a_regression_set_with_the_users_split(tmp_path, capsys):
    rng = np.random.default_rng(3)
    np.save(tmp_path / "images.npy", rng.random((24, SIZE, SIZE)))
    table = pd.DataFrame({"theta_E": rng.uniform(0.5, 2.0, 24), "redshift": rng.uniform(0.1, 1.0, 24),
                          "split": ["train"] * 16 + ["val"] * 4 + ["test"] * 4})
    table.to_csv(tmp_path / "params.csv", index=False)
    code, _, err = _import(capsys, tmp_path / "images.npy", "--params", tmp_path / "params.csv", "--out", tmp_path / "reg")
    assert code == 0, err
    dataset = load_dataset(tmp_path / "reg")
    assert dataset.task == "regression" and dataset.manifest["targets"] == ["theta_E", "redshift"]
    assert dataset.manifest["split_sizes"] == {"train": 16, "val": 4, "test": 4}
    np.testing.assert_allclose(dataset.get_params("val")["theta_E"], table["theta_E"][16:20])

    # A folder's CSV may match its rows by file name instead of by order.
    folder = _class_folders(tmp_path / "mine")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.npy"))
    pd.DataFrame({"file": files[::-1], "mass": np.arange(20.0)[::-1]}).to_csv(tmp_path / "by_file.csv", index=False)
    assert _import(capsys, folder, "--params", tmp_path / "by_file.csv", "--out", tmp_path / "matched")[0] == 0
    params = load_dataset(tmp_path / "matched").params
    np.testing.assert_array_equal(params["mass"], [files.index(f) for f in params["file"]])


def _square_mismatch(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((4, SIZE, SIZE + 2)))
    return [tmp_path / "images.npy"], "not square"


def _label_count(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((6, SIZE, SIZE)))
    np.save(tmp_path / "labels.npy", np.zeros(5, dtype=int))
    return [tmp_path / "images.npy", "--labels", tmp_path / "labels.npy"], "6 images but 5 labels"


def _unknown_type(tmp_path):
    (tmp_path / "images.fits").write_bytes(b"SIMPLE  =                    T")
    return [tmp_path / "images.fits"], "unknown file type '.fits'"


def _stray_file_in_folder(tmp_path):
    _flat_folder(tmp_path / "flat", n=4)
    (tmp_path / "flat" / "notes.png").write_bytes(b"\x89PNG")
    return [tmp_path / "flat"], "notes.png is not a .npy file (unknown file type '.png')"


def _mixed_image_sizes(tmp_path):
    _flat_folder(tmp_path / "flat", n=3)
    np.save(tmp_path / "flat" / "big.npy", np.zeros((2 * SIZE, 2 * SIZE)))
    return [tmp_path / "flat"], "give every image the same size"


def _pickled_object_array(tmp_path):
    array = np.empty(2, dtype=object)
    array[0], array[1] = np.zeros((SIZE, SIZE)), 1.0
    np.save(tmp_path / "images.npy", array, allow_pickle=True)
    return [tmp_path / "images.npy"], "not a plain numeric .npy array"


def _truncated(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((8, SIZE, SIZE)))
    (tmp_path / "images.npy").write_bytes((tmp_path / "images.npy").read_bytes()[:500])
    return [tmp_path / "images.npy"], "truncated"


def _crafted_header(shape) -> bytes:
    """A .npy header that claims ``shape`` float32, followed by 64 bytes of data only."""
    import io

    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return stream.getvalue() + bytes(64)


def _stack_header_claims_more_than_the_file(tmp_path):
    (tmp_path / "images.npy").write_bytes(_crafted_header((100000, SIZE, SIZE)))
    return [tmp_path / "images.npy"], "its header claims shape (100000, 32, 32)"


def _npz_member_header_claims_more(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "arrays.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images.npy", _crafted_header((100000, SIZE, SIZE)))
    return [tmp_path / "arrays.npz"], "arrays.npz:images.npy is truncated or not a plain numeric .npy array"


def _labels_and_class_folders(tmp_path):
    _class_folders(tmp_path / "mine")
    np.save(tmp_path / "labels.npy", np.zeros(20, dtype=int))
    return [tmp_path / "mine", "--labels", tmp_path / "labels.npy"], "already gives labels"


def _bad_split(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((3, SIZE, SIZE)))
    pd.DataFrame({"z": [1.0, 2.0, 3.0], "split": ["train", "valid", "test"]}).to_csv(tmp_path / "p.csv", index=False)
    return [tmp_path / "images.npy", "--params", tmp_path / "p.csv"], "split value 'valid'"


def _class_name_metrics_refuse(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((4, SIZE, SIZE)))
    np.save(tmp_path / "labels.npy", np.array(["a+b", "c"] * 2))
    return [tmp_path / "images.npy", "--labels", tmp_path / "labels.npy"], "class name 'a+b'"


def _class_name_csv_reads_as_missing(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((4, SIZE, SIZE)))
    np.save(tmp_path / "labels.npy", np.array([0, 1] * 2))
    return [tmp_path / "images.npy", "--labels", tmp_path / "labels.npy", "--class-names", "NA,lens"], "missing value"


def _class_without_images(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((4, SIZE, SIZE)))
    np.save(tmp_path / "labels.npy", np.array([0, 1] * 2))
    return [tmp_path / "images.npy", "--labels", tmp_path / "labels.npy", "--class-names", "a,b,c"], "class 'c' has no images"


def _one_class(tmp_path):
    """Issue 33 repro 6: one class imported, then supervised crashed with KeyError 'val/macro_auc'."""
    np.save(tmp_path / "images.npy", np.zeros((20, SIZE, SIZE)))
    np.save(tmp_path / "zeros.npy", np.zeros(20, dtype=int))
    return [tmp_path / "images.npy", "--labels", tmp_path / "zeros.npy"], "needs at least 2 classes"


def _class_too_small_for_the_splits(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((22, SIZE, SIZE)))
    np.save(tmp_path / "labels.npy", np.array([0] * 20 + [1] * 2))
    return [tmp_path / "images.npy", "--labels", tmp_path / "labels.npy"], "class '1' has 2 images, fewer than the splits need"


def _non_finite_target(tmp_path):
    """Issue 33 repro 6: an inf target imported, then evaluate logged test/rel_mae=nan and died in matplotlib."""
    np.save(tmp_path / "images.npy", np.zeros((12, SIZE, SIZE)))
    pd.DataFrame({"theta_e": [1.0 + 0.1 * i for i in range(11)] + [np.inf]}).to_csv(tmp_path / "p.csv", index=False)
    return [tmp_path / "images.npy", "--params", tmp_path / "p.csv"], "column 'theta_e' has 1 non-finite value(s) (inf in row 12)"


def _target_without_spread(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((12, SIZE, SIZE)))
    pd.DataFrame({"z_lens": [0.5] * 12}).to_csv(tmp_path / "p.csv", index=False)
    return [tmp_path / "images.npy", "--params", tmp_path / "p.csv"], "column 'z_lens' is 0.5 for every image"


@pytest.mark.parametrize("make", [_one_class, _class_too_small_for_the_splits, _non_finite_target, _target_without_spread,
                                  _square_mismatch, _label_count, _unknown_type, _stray_file_in_folder, _mixed_image_sizes,
                                  _pickled_object_array, _truncated, _labels_and_class_folders, _bad_split,
                                  _class_name_metrics_refuse, _class_name_csv_reads_as_missing, _class_without_images,
                                  _stack_header_claims_more_than_the_file, _npz_member_header_claims_more],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(make, tmp_path, capsys):
    args, message = make(tmp_path)
    code, out, err = _import(capsys, *args, "--out", tmp_path / "out")
    assert code == 2 and out == ""
    assert err.startswith("dlfm: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no scratch left behind


def test_existing_target_is_replaced_only_when_dlfm_wrote_it_and_force_says_so(tmp_path, capsys):
    source = _class_folders(tmp_path / "mine")
    users = tmp_path / "users"
    users.mkdir()
    (users / "thesis.tex").write_text("mine")
    code, _, err = _import(capsys, source, "--out", users, "--force")
    assert code == 2 and "holds files dlfm did not write (thesis.tex)" in err and err.count("\n") == 1
    assert (users / "thesis.tex").read_text() == "mine" and len(list(users.iterdir())) == 1

    target = tmp_path / "ours"
    assert _import(capsys, source, "--out", target)[0] == 0
    before = verify_dataset_dir(target)["digest"]
    code, _, err = _import(capsys, source, "--out", target, "--seed", 5)
    assert code == 2 and "already holds a dataset; pass --force" in err
    assert verify_dataset_dir(target)["digest"] == before
    assert _import(capsys, source, "--out", target, "--seed", 5, "--force")[0] == 0
    assert verify_dataset_dir(target)["digest"] != before and target.parent.joinpath("ours").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "ours", "users"]  # no scratch or old copy left


def test_unlabelled_folder_imports_as_a_single_placeholder_class(tmp_path, capsys):
    code, out, err = _import(capsys, _flat_folder(tmp_path / "flat"), "--out", tmp_path / "corpus")
    assert code == 0, err
    assert "pretrain_dataset=" in out
    dataset = load_dataset(tmp_path / "corpus")
    assert dataset.task == "unlabelled" and dataset.class_names == ("unlabelled",) and not dataset.labels.any()
    assert dataset.manifest["split_sizes"] == {"train": 26, "val": 5, "test": 5}
    # the folder itself loads the same images, without a dataset directory
    direct = load_dataset(tmp_path / "flat")
    assert direct.task == "unlabelled" and len(direct) == 36
    np.testing.assert_array_equal(direct.get_images("val"), dataset.get_images("val"))


@pytest.fixture
def labelled_dir(tmp_path, capsys):
    assert _import(capsys, _class_folders(tmp_path / "mine", n_per_class=12), "--out", tmp_path / "labelled")[0] == 0
    return tmp_path / "labelled"


def test_autoencoder_pretrains_on_an_unlabelled_folder(tracking_uri, tmp_path, labelled_dir):
    from dlfm.stages.train import run_training_stage
    from dlfm.training import TrainConfig

    corpus = _flat_folder(tmp_path / "corpus")
    config = TrainConfig(objective="autoencoder", dataset=str(labelled_dir), pretrain_dataset=str(corpus),
                         encoder="conv4", epochs=1, batch_size=8)
    summary = run_training_stage(config, progress=False)
    run = mlflow.MlflowClient().get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in ("train/recon_mse", "val/recon_mse", "val/macro_auc", "val/auc_spiral", "test/accuracy"):
        assert name in metrics, name  # the probe reads the labelled set, the encoder learned from the folder
    contexts = {i.tags[0].value: i.dataset.digest for i in run.inputs.dataset_inputs}
    assert set(contexts) == {"pretraining", "probe"}
    assert run.data.tags["dlfm.pretrain_dataset_digest"] == load_dataset(corpus).digest
    assert "dlfm.probe" not in run.data.tags


def test_unlabelled_dataset_trains_without_a_probe_and_says_so(tracking_uri, tmp_path, capsys):
    from dlfm.stages.train import run_training_stage
    from dlfm.training import TrainConfig

    corpus = _flat_folder(tmp_path / "corpus")
    summary = run_training_stage(TrainConfig(objective="mae", dataset=str(corpus), encoder="conv4", epochs=1,
                                             batch_size=8), progress=False)
    run = mlflow.MlflowClient().get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and "val/masked_mse" in run.data.metrics
    assert not [name for name in run.data.metrics if "auc" in name or "accuracy" in name]
    assert run.data.tags["dlfm.probe"].startswith("skipped: no linear probe")
    assert "note: no linear probe" in capsys.readouterr().out

    with pytest.raises(DatasetError, match="has no labels; the supervised objective reads labels"):
        run_training_stage(TrainConfig(objective="supervised", dataset=str(corpus), encoder="conv4", epochs=1), progress=False)


@pytest.mark.slow  # a real subprocess: run by make test, not make test-fast
def test_the_readme_commands_import_and_pretrain_through_mlflow_run(tracking_uri, tmp_path):
    """`dlfm dataset import` as a console command, then `mlflow run . -e autoencoder -P pretrain_dataset=<folder>`."""
    env = {"PATH": f"{REPO / '.venv' / 'bin'}:" + os.environ["PATH"]}
    _class_folders(tmp_path / "mine", n_per_class=12)
    result = run_script(["-m", "dlfm.cli", "dataset", "import", "mine", "--out", "data/galaxies"], cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stderr[-2000:]
    again = run_script(["-m", "dlfm.cli", "dataset", "import", "mine", "--out", "data/galaxies"], cwd=tmp_path, env_extra=env)
    assert again.returncode == 2 and again.stderr.startswith("dlfm: error: ") and again.stderr.count("\n") == 1

    corpus = _flat_folder(tmp_path / "unlabelled")
    result = run_script(["-m", "mlflow", "run", str(REPO), "-e", "autoencoder", "--env-manager", "local",
                         "--experiment-name", "byod", "-P", f"pretrain_dataset={corpus}",
                         "-P", f"dataset={tmp_path / 'data' / 'galaxies'}", "-P", "encoder=conv4", "-P", "epochs=1",
                         "-P", "batch_size=8"], cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient()
    [run] = client.search_runs([client.get_experiment_by_name("byod").experiment_id], "tags.`dlfm.stage` = 'autoencoder'")
    assert run.info.status == "FINISHED" and run.data.params["pretrain_dataset"] == str(corpus)
    assert "val/recon_mse" in run.data.metrics and "val/auc_spiral" in run.data.metrics


def test_import_names_followed_symlinks_and_respects_the_umask(tmp_path, capsys):
    import os
    import stat

    real = _class_folders(tmp_path / "real")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "spiral").symlink_to(real / "spiral")
    (tmp_path / "mine" / "ring").mkdir()
    for file in (real / "ring").iterdir():
        (tmp_path / "mine" / "ring" / file.name).symlink_to(file)
    old = os.umask(0o027)
    try:
        code, out, err = _import(capsys, tmp_path / "mine", "--out", tmp_path / "out")
    finally:
        os.umask(old)
    assert code == 0, err
    assert f"followed symlink: {tmp_path / 'mine' / 'spiral'} -> {real / 'spiral'}" in out
    assert f"followed symlink: {tmp_path / 'mine' / 'ring' / 'img00.npy'} -> {real / 'ring' / 'img00.npy'}" in out
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750  # what mkdir gives under umask 027, not 0700


def test_an_imported_pixel_scale_lets_an_encoder_read_the_set_on_its_grid(tmp_path, capsys):
    from dlfm.data.resample import dataset_for_encoder
    from dlfm.errors import ConfigError
    from dlfm.models import create_encoder

    source = _class_folders(tmp_path / "mine")
    assert _import(capsys, source, "--out", tmp_path / "stated", "--pixel-scale", "0.05")[0] == 0
    assert _import(capsys, source, "--out", tmp_path / "unstated")[0] == 0
    encoder = create_encoder("conv4", pixel_scale=0.1)  # pixels twice as wide: 32 px -> 16 px, the same field of view
    read = dataset_for_encoder(load_dataset(tmp_path / "stated"), encoder)
    assert read.image_size == SIZE // 2 and read.get_images("train").shape[-2:] == (SIZE // 2, SIZE // 2)
    with pytest.raises(ConfigError, match="does not record its pixel scale.*--pixel-scale <arcsec>"):
        dataset_for_encoder(load_dataset(tmp_path / "unstated"), encoder)
    code, _, err = _import(capsys, source, "--out", tmp_path / "negative", "--pixel-scale", "-1")
    assert code != 0 and "pixel-scale must be >= 0 arcsec per pixel" in err and err.count("\n") == 1
    assert not (tmp_path / "negative").exists()
