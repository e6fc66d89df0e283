"""Simulation: physics cross-checks against lenstronomy, determinism, caching and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dlfm.sources import load_dataset
from dlfm.data.layout import RowBlockSha256, sha256_file
from dlfm.errors import ConfigError, DatasetError
from dlfm.simulation import PRESETS, LensRenderer, SimulationConfig, dataset_path, simulate_dataset
from dlfm.simulation import PARAM_COLUMNS, physics, simulator

TINY = dict(n_train=6, n_val=3, n_test=3)


@pytest.fixture(scope="module")
def renderer():
    return LensRenderer(PRESETS["model_ii"])


# --------------------------------------------------------------------------- physics


def test_einstein_radius_of_the_main_halo():
    # Angular-diameter distances, z_l = 0.5, z_s = 1.0: about 1.66 arcsec for 1e12 M☉ (DESIGN.md).
    assert physics.einstein_radius(1e12) == pytest.approx(1.66, abs=0.01)
    # θE ∝ sqrt(M)
    assert physics.einstein_radius(1e8) == pytest.approx(physics.einstein_radius(1e12) * 1e-2, rel=1e-12)


@pytest.mark.parametrize("fused", [True, False], ids=["numba", "numpy"])
def test_point_mass_deflection_matches_lenstronomy_point_mass(fused):
    from lenstronomy.LensModel.lens_model import LensModel

    rng = np.random.default_rng(1)
    n = 37
    theta_E = rng.uniform(0.001, 0.1, n)
    cx, cy = rng.uniform(-2, 2, (2, n))
    x, y = rng.uniform(-3, 3, (2, 5000))
    x[:3], y[:3] = cx[:3], cy[:3]  # points exactly on a mass: the r_min floor must agree too
    x[3], y[3] = cx[3] + 1e-9, cy[3]
    kwargs = [{"theta_E": t, "center_x": a, "center_y": b} for t, a, b in zip(theta_E, cx, cy)]
    ref_x, ref_y = LensModel(["POINT_MASS"] * n).alpha(x, y, kwargs)
    ours_x, ours_y = physics.point_mass_deflection(x, y, theta_E, cx, cy, fused=fused)
    ok = np.isfinite(ref_x)
    np.testing.assert_allclose(ours_x[ok], ref_x[ok], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours_y[ok], ref_y[ok], rtol=1e-6, atol=1e-6)


def test_renderer_matches_lenstronomy_image_model(renderer):
    """Our ray shooting equals ImageModel with SIE + SHEAR + POINT_MASS profiles (1e-6)."""
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel

    rng = np.random.default_rng(2)
    lens = physics.sample_macro_lens(rng, PRESETS["regression"], 1.0, from_priors=True)
    source = physics.sample_source(rng, PRESETS["model_ii"])
    kwargs_lens = renderer.lens_kwargs(lens)
    kwargs_source = renderer.source_kwargs(source)
    # no substructure: the prebuilt lenstronomy image model itself
    ours = renderer.noiseless_image(kwargs_lens, kwargs_source)
    reference = renderer.image_model.image(kwargs_lens, kwargs_source)
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6 * reference.max())

    masses, _ = renderer.point_masses(rng, "cdm")
    n = len(masses["mass"])
    full = ImageModel(
        renderer.image_model.Data,
        renderer.image_model.PSF,
        lens_model_class=LensModel(["SIE", "SHEAR"] + ["POINT_MASS"] * n),
        source_model_class=renderer.source_model,
        kwargs_numerics={"supersampling_factor": 1},
    )
    kwargs_points = [
        {"theta_E": t, "center_x": a, "center_y": b}
        for t, a, b in zip(masses["theta_E"], masses["center_x"], masses["center_y"])
    ]
    reference = full.image(kwargs_lens + kwargs_points, kwargs_source)
    ours = renderer.noiseless_image(kwargs_lens, kwargs_source, masses)
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6 * reference.max())


def test_magnitude_amplitude_matches_simapi(renderer):
    from lenstronomy.SimulationAPI.sim_api import SimAPI

    preset = PRESETS["model_ii"]
    sim = SimAPI(64, preset.instrument.kwargs_single_band(), {"source_light_model_list": ["SERSIC_ELLIPSE"]})
    source = physics.sample_source(np.random.default_rng(3), preset)
    ours = renderer.source_kwargs(source)[0]["amp"]
    kwargs_mag = [{k: v for k, v in renderer.source_kwargs(source)[0].items() if k != "amp"} | {"magnitude": 20.0}]
    _, reference, _ = sim.magnitude2amplitude(kwargs_source_mag=kwargs_mag)
    assert ours == pytest.approx(reference[0]["amp"], rel=1e-12)


def test_vortex_has_100_masses_totalling_3e10_on_a_centred_line():
    rng = np.random.default_rng(4)
    vortex = PRESETS["model_ii"].vortex
    for _ in range(20):
        v = physics.sample_vortex(rng, vortex)
        assert len(v["mass"]) == 100
        assert v["mass"].sum() == pytest.approx(3e10, rel=1e-12)  # (M☉)
        assert np.all(v["mass"] == v["mass"][0])
        assert 1e-24 <= v["axion_mass"] <= 1e-22  # (eV)
        assert v["half_length"] == pytest.approx(3e-24 / v["axion_mass"])  # (arcsec)
        r = np.hypot(v["center_x"], v["center_y"])
        assert r.max() == pytest.approx(v["half_length"])
        # collinear through the origin at the drawn angle
        cross = v["center_x"] * math.sin(v["angle"]) - v["center_y"] * math.cos(v["angle"])
        np.testing.assert_allclose(cross, 0.0, atol=1e-12)
        assert np.mean(v["center_x"]) == pytest.approx(0.0, abs=1e-12)


def test_cdm_subhalos_within_bounds():
    rng = np.random.default_rng(5)
    cdm = PRESETS["model_ii"].cdm
    masses = []
    for _ in range(40):
        s = physics.sample_cdm_subhalos(rng, cdm)
        assert len(s["mass"]) == 25
        radius = np.hypot(s["center_x"], s["center_y"])
        assert np.all((radius >= 0.25) & (radius <= 2.0))  # (arcsec)
        masses.append(s["mass"])
    masses = np.concatenate(masses)
    assert masses.min() >= 1e6 and masses.max() <= 1e10  # (M☉)
    # dN/dm ∝ m^-0.9: the CDF is (m^0.1 - m_min^0.1) / (m_max^0.1 - m_min^0.1).
    # Kolmogorov-Smirnov distance of 1000 draws; 0.06 is above the 99.9% critical value.
    m = np.sort(masses)
    analytic = (m**0.1 - 1e6**0.1) / (1e10**0.1 - 1e6**0.1)
    empirical = np.arange(1, len(m) + 1) / len(m)
    assert np.abs(analytic - empirical).max() < 0.06


def test_regression_labels_inside_priors_and_round_trip():
    from lenstronomy.Util import param_util

    preset = PRESETS["regression"]
    rng = np.random.default_rng(6)
    priors, source_priors = preset.lens_priors, preset.source_priors
    for _ in range(200):
        lens = physics.sample_macro_lens(rng, preset, 1.66, from_priors=True)
        source = physics.sample_source(rng, preset)
        assert priors.theta_E[0] <= lens["theta_E"] <= priors.theta_E[1]
        assert priors.q[0] <= lens["q"] <= priors.q[1]
        assert 0 <= lens["phi"] < math.pi and 0 <= lens["psi_ext"] < math.pi
        assert priors.gamma_ext[0] <= lens["gamma_ext"] <= priors.gamma_ext[1]
        assert -0.35 <= source["src_x"] <= 0.35 and -0.35 <= source["src_y"] <= 0.35
        assert source_priors.R_sersic[0] <= source["src_R"] <= source_priors.R_sersic[1]
        assert source_priors.n_sersic[0] <= source["src_n"] <= source_priors.n_sersic[1]
        assert source_priors.magnitude[0] <= source["src_mag"] <= source_priors.magnitude[1]
        # derived labels round-trip through lenstronomy param_util
        phi, q = param_util.ellipticity2phi_q(lens["e1"], lens["e2"])
        assert q == pytest.approx(lens["q"], abs=1e-9)
        assert math.remainder(phi - lens["phi"], math.pi) == pytest.approx(0.0, abs=1e-9)
        psi, gamma = param_util.shear_cartesian2polar(lens["gamma1"], lens["gamma2"])
        assert gamma == pytest.approx(lens["gamma_ext"], abs=1e-12)
        if gamma > 1e-6:
            assert math.remainder(psi - lens["psi_ext"], math.pi) == pytest.approx(0.0, abs=1e-6)
        e1, e2 = param_util.phi_q2_ellipticity(lens["phi"], lens["q"])
        assert (e1, e2) == pytest.approx((lens["e1"], lens["e2"]), abs=1e-12)


def test_fixed_lens_of_classification_presets():
    preset = PRESETS["model_ii"]
    lens = physics.sample_macro_lens(np.random.default_rng(0), preset, 1.66, from_priors=False)
    assert (lens["e1"], lens["e2"], lens["gamma1"], lens["gamma2"]) == (0.1, 0.0, 0.05, 0.0)
    assert lens["q"] == pytest.approx(0.9 / 1.1)
    assert lens["gamma_ext"] == pytest.approx(0.05) and lens["psi_ext"] == 0.0


@pytest.mark.parametrize("name", ["model_ii", "model_i", "model_iii"])
def test_einstein_ring_sits_at_theta_e_over_the_pixel_scale(name):
    """A source on the optical axis images to a ring of radius θE: the radial profile peaks at θE / pixel scale."""
    preset = PRESETS[name]
    r = LensRenderer(preset)
    lens = physics.sample_macro_lens(np.random.default_rng(0), preset, r.theta_E_halo, from_priors=False)
    lens.update(e1=0.0, e2=0.0, gamma1=0.0, gamma2=0.0)  # a singular isothermal sphere: a circular ring
    source = dict(src_R=0.05, src_n=1.0, src_e1=0.0, src_e2=0.0, src_x=0.0, src_y=0.0, src_mag=20.0, src_amp=20.0)
    if preset.source.magnitude is None:
        source["src_mag"] = math.nan
    image = r.noiseless_image(r.lens_kwargs(lens), r.source_kwargs(source)).reshape(preset.image_size, preset.image_size)
    centre = (preset.image_size - 1) / 2
    yy, xx = np.indices(image.shape)
    radius = np.hypot(xx - centre, yy - centre)
    annuli = [lo for lo in np.arange(0.0, preset.image_size / 2, 0.5) if ((radius >= lo) & (radius < lo + 0.5)).any()]
    profile = [image[(radius >= lo) & (radius < lo + 0.5)].mean() for lo in annuli]  # 0.5 px annuli with pixels
    ring_radius_px = annuli[int(np.argmax(profile))] + 0.25
    expected_px = r.theta_E_halo / preset.instrument.pixel_scale
    assert ring_radius_px == pytest.approx(expected_px, abs=1.0), (name, ring_radius_px, expected_px)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_renders_finite_images(name):
    preset = PRESETS[name]
    r = LensRenderer(preset)
    for class_name in preset.class_names:
        image, params = r.render(np.random.default_rng(7), class_name)
        assert image.shape == (preset.image_size, preset.image_size) and image.dtype == np.float32
        assert np.isfinite(image).all() and image.max() > 0
        assert set(params) <= set(PARAM_COLUMNS)


# --------------------------------------------------------------------------- config


def test_config_validation_errors():
    with pytest.raises(ConfigError, match="model_ii, model_i, model_iii, regression"):
        SimulationConfig(preset="model_iv").validate()
    with pytest.raises(ConfigError, match="n_train must be positive"):
        SimulationConfig(n_train=0).validate()
    with pytest.raises(ConfigError, match="n_val must be positive"):
        SimulationConfig(n_val=-5).validate()
    with pytest.raises(ConfigError, match="at least 3"):
        SimulationConfig(n_test=2).validate()
    with pytest.raises(ConfigError, match="integer"):
        SimulationConfig(n_train=10.5).validate()
    with pytest.raises(ConfigError, match="seed"):
        SimulationConfig(seed=-1).validate()
    with pytest.raises(ConfigError, match="vary_lens"):
        SimulationConfig(preset="regression", vary_lens=True).validate()
    SimulationConfig(preset="regression", n_train=1, n_val=1, n_test=1).validate()


def test_digest_is_stable_and_sensitive():
    a = SimulationConfig(**TINY)
    assert a.digest() == SimulationConfig(**TINY).digest()
    assert len(a.digest()) == 64
    assert a.digest() != SimulationConfig(**TINY, seed=1).digest()
    assert a.digest() != SimulationConfig(**TINY, vary_lens=True).digest()
    assert dataset_path(a, "x").name == f"model_ii-{a.digest()[:10]}"


# --------------------------------------------------------------------------- datasets on disk


def _data_bytes(path):
    return {name: (path / name).read_bytes() for name in ("images.npy", "labels.npy", "params.csv", "manifest.json")}


def test_worker_count_does_not_change_the_bytes(tmp_path):
    # 48 images: 3 workers write 2-row chunks into the shared images.npy, finishing out of order
    config = SimulationConfig(n_train=36, n_val=6, n_test=6, seed=3)
    one = simulate_dataset(config, tmp_path / "one", workers=1, progress=False)
    for workers in (2, 3):
        timings = {}
        many = simulate_dataset(config, tmp_path / str(workers), workers=workers, progress=False, timings=timings)
        assert many.name == one.name
        assert _data_bytes(many) == _data_bytes(one)
        assert {"pool_start", "render", "hash", "write"} <= set(timings)
    manifest = json.loads((one / "manifest.json").read_text())
    assert manifest["files"]["images.npy"] == sha256_file(one / "images.npy")  # the hash taken while rendering


def test_dataset_layout_and_manifest(tmp_path):
    config = SimulationConfig(preset="regression", n_train=5, n_val=2, n_test=2, seed=1)
    path = simulate_dataset(config, tmp_path, workers=1, progress=False)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["preset"] == "regression" and manifest["task"] == "regression"
    assert manifest["split_sizes"] == {"train": 5, "val": 2, "test": 2}
    assert manifest["theta_E_halo_arcsec"] == pytest.approx(1.66, abs=0.01)
    assert manifest["preset_settings"]["instrument"]["magnitude_zero_point"] == 24.0
    assert set(manifest["software"]) >= {"numpy", "lenstronomy", "python", "dlfm"}
    assert set(manifest["files"]) == {"images.npy", "labels.npy", "params.csv"}
    dataset = load_dataset(path)
    assert dataset.class_names == ("lens",) and dataset.task == "regression"
    assert list(dataset.split) == ["train"] * 5 + ["val"] * 2 + ["test"] * 2
    params = dataset.params
    assert params["theta_E"].between(0.8, 1.6).all()
    assert params["axion_mass"].isna().all()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no scratch directories left


def test_cache_hit_tamper_and_force(tmp_path):
    config = SimulationConfig(**TINY, seed=11)
    path = simulate_dataset(config, tmp_path, workers=1, progress=False)
    manifest_mtime = (path / "manifest.json").stat().st_mtime_ns
    (path / "sentinel").write_text("kept unless rebuilt")

    # cache hit: same directory, nothing rewritten
    assert simulate_dataset(config, tmp_path, workers=1, progress=False) == path
    assert (path / "sentinel").exists()
    assert (path / "manifest.json").stat().st_mtime_ns == manifest_mtime

    # tampered pixel: refused, naming the file and the fix
    images = np.load(path / "images.npy")
    images[0, 0, 0, 0] += 1.0
    np.save(path / "images.npy", images)
    with pytest.raises(DatasetError, match=r"images\.npy sha256 mismatch.*-P force=true"):
        simulate_dataset(config, tmp_path, workers=1, progress=False)
    with pytest.raises(DatasetError, match=r"images\.npy"):
        load_dataset(path)

    # force never deletes a file dlfm did not write: refused before any simulation, sentinel kept
    with pytest.raises(DatasetError, match=r"holds files dlfm did not write \(sentinel\)"):
        simulate_dataset(config, tmp_path, workers=1, force=True, progress=False)
    assert (path / "sentinel").read_text() == "kept unless rebuilt"
    (path / "sentinel").unlink()

    # force rebuilds into the same name; the rebuilt copy verifies
    assert simulate_dataset(config, tmp_path, workers=1, force=True, progress=False) == path
    load_dataset(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_crash_leaves_no_half_dataset(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(simulator, "render_all", explode)
    with pytest.raises(RuntimeError, match="boom"):
        simulate_dataset(SimulationConfig(**TINY), tmp_path, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DatasetError, match=r"cannot write datasets to .*a-file.*out_dir"):
        simulate_dataset(SimulationConfig(**TINY), blocker / "data", workers=1, progress=False)


def test_bad_workers(tmp_path):
    with pytest.raises(ConfigError, match="workers"):
        simulate_dataset(SimulationConfig(**TINY), tmp_path, workers=0, progress=False)


def test_unknown_preset_fails_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="unknown simulation preset"):
        simulate_dataset(SimulationConfig(preset="nope"), tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()


def test_vary_lens_draws_the_macro_lens_from_the_regression_priors():
    fixed = LensRenderer(PRESETS["model_ii"])
    varied = LensRenderer(PRESETS["model_ii"], vary_lens=True)
    theta_fixed = {fixed.render(np.random.default_rng(i), "cdm")[1]["theta_E"] for i in range(5)}
    drawn = [varied.render(np.random.default_rng(i), "cdm")[1] for i in range(5)]
    assert len(theta_fixed) == 1 and theta_fixed.pop() == pytest.approx(physics.einstein_radius(1e12))
    assert len({p["theta_E"] for p in drawn}) == 5
    assert all(0.8 <= p["theta_E"] <= 1.6 and 0.5 <= p["q"] <= 1.0 for p in drawn)
    assert all(p["n_subhalo"] == 25 for p in drawn)  # substructure unchanged


def test_ccd_noise_sigma_equals_singleband_estimate(renderer):
    from lenstronomy.SimulationAPI.observation_api import SingleBand

    band = SingleBand(**PRESETS["model_ii"].instrument.kwargs_single_band())
    image = np.random.default_rng(8).normal(0.5, 1.0, (64, 64))  # includes negative pixels
    np.testing.assert_allclose(renderer._noise.sigma(image), band.estimate_noise(image.copy()), rtol=1e-12)


def test_row_block_hash_equals_the_file_hash_whatever_the_finishing_order(tmp_path):
    path = tmp_path / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(10, 1, 4, 4))
    hasher = RowBlockSha256(images)
    for start, stop in ((6, 10), (0, 3), (3, 6)):  # a pool's chunks come back in any order
        images[start:stop] = np.random.default_rng(start).random((stop - start, 1, 4, 4))
        hasher.add(start, stop)
        assert hasher.hashed_rows == (0 if start == 6 else stop if stop < 6 else 10)
    images.flush()
    assert hasher.hexdigest() == sha256_file(path)
    with pytest.raises(RuntimeError, match="only 0 of 3 rows"):
        RowBlockSha256(np.lib.format.open_memmap(tmp_path / "b.npy", mode="w+", dtype=np.float32, shape=(3, 1))).hexdigest()
