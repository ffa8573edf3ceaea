"""Atomic outputs: a folder or file under its final name is always complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from uvlm.io import atomic_dir


def test_atomic_dir_replaces_the_final_folder_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "shard_0"
    with atomic_dir(final) as partial:
        assert partial == tmp_path / "shard_0.partial" and partial.is_dir() and not final.exists()
        (partial / "a.txt").write_text("one")
    assert (final / "a.txt").read_text() == "one" and not partial.exists()
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(final) as partial:
        (partial / "a.txt").write_text("half")
        raise RuntimeError("boom")
    assert (final / "a.txt").read_text() == "one"  # the complete earlier folder stands, untouched
    assert not partial.exists()  # and nothing half-written is left
    with atomic_dir(final) as partial:  # a rerun replaces it whole: no file of the old folder survives
        (partial / "b.txt").write_text("two")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]


def test_atomic_dir_clears_a_partial_folder_left_by_a_killed_run(tmp_path: Path) -> None:
    stale = tmp_path / "out.partial"
    stale.mkdir()
    (stale / "stale.npy").write_bytes(b"x")
    with atomic_dir(tmp_path / "out") as partial:
        assert list(partial.iterdir()) == []
    assert (tmp_path / "out").is_dir() and not stale.exists()
