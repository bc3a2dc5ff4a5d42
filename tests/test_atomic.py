"""upo.atomic: a folder is complete under its final name, or not there at all."""

from pathlib import Path

import pytest

from upo.atomic import atomic_folder, commit_folder


def test_atomic_folder_replaces_the_old_folder_when_complete(tmp_path: Path):
    final = tmp_path / "final"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_folder(final) as tmp:
        assert tmp.parent == tmp_path and tmp != final and not any(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
        assert (final / "old.txt").exists()  # untouched until the block completes
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # no temporary folder left


def test_atomic_folder_keeps_the_old_folder_on_error(tmp_path: Path):
    final = tmp_path / "final"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(final) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed mid-save")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_commit_folder_durable_moves_the_whole_tree(tmp_path: Path):
    tmp = tmp_path / ".tmp-step-3"
    (tmp / "sub").mkdir(parents=True)
    (tmp / "sub" / "state.bin").write_bytes(b"x")
    commit_folder(tmp, tmp_path / "step-3", durable=True)
    assert (tmp_path / "step-3" / "sub" / "state.bin").read_bytes() == b"x" and not tmp.exists()
