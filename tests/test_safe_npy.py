"""Object .npy files are untrusted: the restricted unpickler rebuilds arrays, never runs code."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from dlfm.data import load_deeplense_folder
from dlfm.data.safe_npy import NotNpyError, UnsafeNpyError, load_npy
from dlfm.errors import DatasetError

SIZE = 8


class _Payload:
    """What an attacker puts in an object array: unpickling calls os.system(command)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _object_npy(path, *items):
    array = np.empty(len(items), dtype=object)
    for k, item in enumerate(items):
        array[k] = item
    np.save(path, array, allow_pickle=True)
    return path


def _folder(root, axion_items):
    """A DeepLenseSim layout whose axion/ holds one file built from ``axion_items``."""
    rng = np.random.default_rng(0)
    for folder in ("no_sub", "cdm", "axion"):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            np.save(root / folder / f"{i}.npy", rng.random((SIZE, SIZE)).astype(np.float32))
    _object_npy(root / "axion" / "evil.npy", *axion_items)
    return root


def test_malicious_object_npy_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    root = _folder(tmp_path / "data", [np.zeros((SIZE, SIZE), np.float32), _Payload(f"touch {marker}")])
    with pytest.raises(DatasetError, match=r"evil\.npy is refused: refused to load posix\.system") as info:
        load_deeplense_folder(root)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_payload_as_whole_array_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "x.npy"
    # a header saying dtype=object followed by any pickle: the pickle is the attack surface
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        pickle.dump(_Payload(f"touch {marker}"), handle, protocol=3)
    with pytest.raises(UnsafeNpyError):
        load_npy(path.read_bytes(), allow_object=True)
    assert not marker.exists()


@pytest.mark.parametrize("mass", [1.5e-23, np.float64(2e-23), np.float32(3e-23)], ids=["float", "float64", "float32"])
def test_genuine_image_mass_array_loads(tmp_path, mass):
    image = np.arange(SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    array = load_npy(_object_npy(tmp_path / "a.npy", image, mass).read_bytes(), allow_object=True)
    assert array.dtype == object and array.shape == (2,)
    np.testing.assert_array_equal(array[0], image)
    assert float(array[1]) == pytest.approx(float(mass))


def test_genuine_axion_folder_loads(tmp_path):
    root = _folder(tmp_path / "data", [np.ones((1, SIZE, SIZE), np.float64), 1e-23])
    dataset = load_deeplense_folder(root)
    assert dataset.params["axion_mass"].dropna().tolist() == [1e-23]


def test_object_array_outside_axion_is_refused(tmp_path):
    path = _object_npy(tmp_path / "a.npy", np.zeros((SIZE, SIZE)), 1.0)
    with pytest.raises(ValueError, match="object array"):
        load_npy(path.read_bytes(), allow_object=False)


def test_text_file_renamed_npy_is_not_called_pickled(tmp_path):
    root = _folder(tmp_path / "data", [np.zeros((SIZE, SIZE), np.float32), 1e-23])
    (root / "cdm" / "0.npy").write_text("hello, this is a text file\n")
    with pytest.raises(DatasetError, match=r"0\.npy is not a \.npy file") as info:
        load_deeplense_folder(root)
    assert "pickle" not in str(info.value)
    with pytest.raises(NotNpyError):
        load_npy(b"plain text")
