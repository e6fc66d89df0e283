"""A .npy header is untrusted: one that claims more than the file holds is refused before any allocation.

Each crafted file is read in a child process (the real loaders, no torch) that reports its own peak
RSS, so the test sees what one hostile file costs a worker: one line, exit 2, under 200 MB. The peak
is the kernel's VmHWM of the child's own address space: ``getrusage(RUSAGE_SELF).ru_maxrss`` would
also count the pytest parent's high-water mark, which Linux carries across ``fork`` + ``exec``.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numpy.lib import format as npy_format

from dlfm.data.safe_npy import MAX_IMAGE_SIDE, NpyHeaderError, check_npy_file, load_npy

SIZE = 64
PEAK_RSS_LIMIT_MB = 200

# The child: load a DeepLense folder or a dataset directory, print the error line and its peak RSS.
_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from dlfm.data.dataset import load_dataset_dir
    from dlfm.data.deeplense import load_deeplense_folder
    from dlfm.errors import DlfmError
    kind, path = sys.argv[1], sys.argv[2]
    try:
        (load_deeplense_folder if kind == "folder" else load_dataset_dir)(Path(path))
        message, code = "loaded", 0
    except DlfmError as error:
        message, code = str(error), 2
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    peak_mb = int(status.split()[0]) / 1024
    print(json.dumps({"message": message, "peak_mb": peak_mb}))
    sys.exit(code)
    """
)


def _header_bytes(shape, descr="<f4", fortran_order=False, version=(1, 0)) -> bytes:
    """A .npy magic + header claiming ``shape``, written by numpy's own header writer."""
    stream = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran_order, "shape": tuple(shape)}
    if version == (1, 0):
        npy_format.write_array_header_1_0(stream, header)
    else:
        npy_format.write_array_header_2_0(stream, header)
    return stream.getvalue()


class _HugeInnerArray:
    """Pickles as a numpy array whose rebuild state claims ``shape`` but carries only ``data``."""

    def __init__(self, reconstruct_shape, state_shape, data: bytes):
        self.reconstruct_shape, self.state_shape, self.data = reconstruct_shape, state_shape, data

    def __reduce__(self):
        reconstruct = np.ndarray.__reduce__(np.empty(0))[0]
        state = (1, self.state_shape, np.dtype("float32"), False, self.data)
        return reconstruct, (np.ndarray, self.reconstruct_shape, b"b"), state


def _object_file(path, inner) -> None:
    array = np.empty(2, dtype=object)
    array[0], array[1] = inner, 1e-23
    np.save(path, array, allow_pickle=True)


def _crafted(kind: str, path) -> None:
    """Write one crafted file of ``kind`` at ``path``."""
    data = np.zeros(SIZE * SIZE, np.float32).tobytes()  # 16 KB: one genuine image's worth
    if kind == "huge-shape":
        path.write_bytes(_header_bytes((100000, 100000)) + data)
    elif kind == "overflowing-shape":
        path.write_bytes(_header_bytes((2**62, 2**62, 8, 8)) + data)
    elif kind == "fortran-wrong-shape":
        path.write_bytes(_header_bytes((SIZE, 4 * SIZE), fortran_order=True) + data)
    elif kind == "format-2.0-huge":
        path.write_bytes(_header_bytes((1, 100000, 100000), version=(2, 0)) + data)
    elif kind == "object-state-claims-huge":
        _object_file(path, _HugeInnerArray((0,), (100000, 100000), data))
    elif kind == "object-reconstruct-claims-huge":
        _object_file(path, _HugeInnerArray((4096, 4096, 1024), (SIZE, SIZE), data))
    else:
        raise ValueError(kind)


CRAFTED = ["huge-shape", "overflowing-shape", "fortran-wrong-shape", "format-2.0-huge", "object-state-claims-huge",
           "object-reconstruct-claims-huge"]


def _deeplense_folder(root):
    rng = np.random.default_rng(0)
    for folder in ("no_sub", "cdm", "axion"):
        (root / folder).mkdir(parents=True)
        for i in range(4):
            np.save(root / folder / f"{i}.npy", rng.random((SIZE, SIZE)).astype(np.float32))
    return root


def _run_child(kind: str, path):
    done = subprocess.run([sys.executable, "-c", _CHILD, kind, str(path)], capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    return done.returncode, json.loads(lines[-1]), done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", CRAFTED)
def test_crafted_header_in_a_deeplense_folder_is_one_line_and_cheap(tmp_path, kind):
    root = _deeplense_folder(tmp_path / "data")
    target = root / "axion" / "crafted.npy"
    _crafted(kind, target)
    code, report, stderr = _run_child("folder", root)
    assert code == 2, stderr
    assert "crafted.npy is refused: its" in report["message"]
    assert "\n" not in report["message"]
    assert "claims" in report["message"] and "bytes" in report["message"]
    assert "Traceback" not in stderr
    assert report["peak_mb"] < PEAK_RSS_LIMIT_MB, report


@pytest.mark.slow
def test_crafted_labels_in_a_dataset_directory_is_refused_before_loading(tmp_path, tiny_classification_dir):
    """labels.npy of a verified dataset directory with a lying header (the manifest re-signed to match)."""
    from dlfm.data.layout import LABELS_FILE, MANIFEST_FILE, dataset_digest, sha256_file

    root = tmp_path / "ds"
    shutil.copytree(tiny_classification_dir, root)
    (root / LABELS_FILE).write_bytes(_header_bytes((10**11,), descr="<i8") + b"\0" * 64)
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    manifest["files"][LABELS_FILE] = sha256_file(root / LABELS_FILE)
    manifest["digest"] = dataset_digest(manifest["files"])
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    code, report, stderr = _run_child("dir", root)
    assert code == 2, stderr
    assert f"{LABELS_FILE} is refused" in report["message"], report
    assert "(100000000000,)" in report["message"]
    assert report["peak_mb"] < PEAK_RSS_LIMIT_MB, report


@pytest.mark.parametrize("kind", CRAFTED)
def test_load_npy_refuses_each_crafted_kind(tmp_path, kind):
    path = tmp_path / "x.npy"
    _crafted(kind, path)
    with pytest.raises(NpyHeaderError, match="claims"):
        load_npy(path.read_bytes(), allow_object=True)


def test_message_names_the_claimed_shape_and_the_real_size(tmp_path):
    path = tmp_path / "x.npy"
    _crafted("huge-shape", path)
    with pytest.raises(NpyHeaderError) as info:
        check_npy_file(path)
    assert "(100000, 100000)" in str(info.value)
    assert f"{path.stat().st_size} bytes" in str(info.value)


def test_image_side_bound(tmp_path):
    path = tmp_path / "x.npy"
    side = MAX_IMAGE_SIDE + 1
    np.save(path, np.zeros((1, side), np.float32))  # honest about its size, but 1 × 4097 is no image
    with pytest.raises(NpyHeaderError, match=f"over {MAX_IMAGE_SIDE} px"):
        check_npy_file(path)


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
@pytest.mark.parametrize("fortran", [False, True])
def test_genuine_files_of_every_layout_still_load(tmp_path, version, fortran):
    image = np.arange(SIZE * 2 * SIZE, dtype=np.float32).reshape(SIZE, 2 * SIZE)
    image = np.asfortranarray(image) if fortran else image
    path = tmp_path / "x.npy"
    with open(path, "wb") as handle:
        npy_format.write_array(handle, image, version=version)
    np.testing.assert_array_equal(load_npy(path.read_bytes()), image)
    assert check_npy_file(path).shape == (SIZE, 2 * SIZE)


def test_genuine_object_array_still_loads_as_plain_arrays(tmp_path):
    path = tmp_path / "a.npy"
    image = np.ones((SIZE, SIZE), np.float32)
    _object_file(path, image)
    array = load_npy(path.read_bytes(), allow_object=True)
    assert type(array) is np.ndarray and type(array[0]) is np.ndarray
    np.testing.assert_array_equal(array[0], image)


def test_truncated_pickle_is_not_a_header_error(tmp_path):
    path = tmp_path / "a.npy"
    _object_file(path, np.ones((SIZE, SIZE), np.float32))
    with pytest.raises((EOFError, pickle.UnpicklingError, ValueError)):
        load_npy(path.read_bytes()[:-200], allow_object=True)
