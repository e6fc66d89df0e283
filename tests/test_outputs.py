"""Report directories: written fresh, swapped in atomically, and never wiping files dlfm did not write."""

from __future__ import annotations

import pytest

from dlfm.errors import ConfigError
from dlfm.outputs import REPORT_MARKER, check_report_dir, remove_owned_tree, write_report_dir


def _write(text):
    def write(out):
        (out / "figures").mkdir()
        (out / "report.md").write_text(text)
        (out / "figures" / "a.png").write_bytes(b"png")
        return text
    return write


def test_report_replaced_atomically_and_listed(tmp_path):
    out = tmp_path / "reports" / "latest"
    assert write_report_dir(out, _write("one")) == "one"
    assert (out / "report.md").read_text() == "one" and (out / REPORT_MARKER).is_file()
    assert write_report_dir(out, _write("two")) == "two"
    assert (out / "report.md").read_text() == "two"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["latest"]  # no staging/old dirs left


@pytest.mark.parametrize("name", [".", "data"])
def test_foreign_directory_is_refused_and_kept(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "images.npy").write_bytes(b"user data")
    (tmp_path / "README.md").write_text("mine")
    with pytest.raises(ConfigError, match="holds no dlfm report marker") as info:
        write_report_dir(name, _write("x"))
    assert "\n" not in str(info.value) and "-P report_dir=" in str(info.value)
    assert (tmp_path / "data" / "images.npy").read_bytes() == b"user data" and (tmp_path / "README.md").exists()


def test_user_file_added_to_a_report_is_never_deleted(tmp_path):
    out = tmp_path / "latest"
    write_report_dir(out, _write("one"))
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(ConfigError, match="did not write"):
        check_report_dir(out)
    with pytest.raises(ConfigError, match="did not write"):
        write_report_dir(out, _write("two"))
    assert (out / "notes.txt").read_text() == "my notes" and (out / "report.md").read_text() == "one"


def test_empty_or_missing_directory_is_fine(tmp_path):
    (tmp_path / "empty").mkdir()
    check_report_dir(tmp_path / "empty")
    check_report_dir(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a directory"):
        (tmp_path / "file").write_text("x")
        check_report_dir(tmp_path / "file")


def test_remove_owned_tree_refuses_foreign_files(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "a").write_text("a")
    (tmp_path / "d" / "b").write_text("b")
    with pytest.raises(ConfigError):
        remove_owned_tree(tmp_path / "d", ["sub/a"])
    assert (tmp_path / "d" / "sub" / "a").exists()
    remove_owned_tree(tmp_path / "d", ["sub/a", "b"])
    assert not (tmp_path / "d").exists()
