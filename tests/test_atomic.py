"""The one atomic writer: permissions without touching the umask, data synced before the rename."""
import os
import stat

import pytest

from napari_focusq import _atomic


def test_writes_do_not_touch_the_process_umask(tmp_path, monkeypatch):
    # os.umask is process-wide: setting it per write raced other threads' file creation
    def no_umask(mask):
        raise AssertionError("os.umask called while writing")

    monkeypatch.setattr(_atomic.os, "umask", no_umask)
    out = _atomic.write_text(tmp_path / "a.txt", "hello")
    assert out.read_text() == "hello"
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_atomic.UMASK


def test_umask_constant_is_the_process_umask():
    mask = os.umask(0)
    os.umask(mask)
    assert _atomic.UMASK == mask


def test_data_is_synced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_size))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(_atomic.os, "fsync", fsync)
    monkeypatch.setattr(_atomic.os, "replace", replace)
    _atomic.write_bytes(tmp_path / "b.bin", b"12345")
    assert events == [("fsync", 5), ("replace", "b.bin")]


def test_a_failed_sync_leaves_the_old_file(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "c.txt"
    target.write_text("old")

    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_atomic.os, "fsync", eio)
    with pytest.raises(OSError):
        _atomic.write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.txt"]  # no temporary file left
