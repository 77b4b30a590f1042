"""Atomic writes: nothing half-written under the final name, and the user's umask."""

from __future__ import annotations

import os
import stat

import pytest

from edgeser.core.io import atomic_open, atomic_path, umask, write_json


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path, mask):
    """mkstemp makes 0600 files: an exported model was unreadable by a web server running
    as another user whatever the umask said."""
    old = os.umask(mask)
    try:
        assert umask() == mask
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_path(tmp_path / "b.onnx") as tmp:
            tmp.write_bytes(b"\0" * 10)  # a library writing to the path it is given
        with atomic_open(tmp_path / "c.bin", "wb") as fh:
            fh.write(b"1")
        (tmp_path / "plain.txt").write_text("x")  # what open() gives, for reference
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~mask
    for name in ("a.json", "b.onnx", "c.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "model.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]
