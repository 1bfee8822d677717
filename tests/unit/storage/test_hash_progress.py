"""The local hashing loop: digests, its size cap, its stop flag and the progress it hands to the event loop."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from bot.storage import datasets


def _files(tmp_path: Path) -> dict[str, bytes]:
    contents = {"small.bin": b"a" * 1000, "big.bin": bytes(range(256)) * 20_000, "empty.bin": b""}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    return contents


def test_progress_adds_up_and_comes_once_per_small_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    contents = _files(tmp_path)
    monkeypatch.setattr(datasets, "PROGRESS_STEP", 1 << 20)
    monkeypatch.setattr(datasets, "BLOCK", 64 << 10)
    calls: list[tuple[int, bool]] = []
    out = datasets._hash_local_files(str(tmp_path), [*contents, "../outside.bin"],
                                     {n: len(d) for n, d in contents.items()}, threading.Event(),
                                     lambda n, done: calls.append((n, done)))
    for name, data in contents.items():
        assert out[name] == ("ok", hashlib.sha256(data).hexdigest(), len(data))
    assert out["../outside.bin"][0] == "error"
    assert sum(n for n, _ in calls) == sum(len(d) for d in contents.values())
    assert sum(done for _, done in calls) == 4  # every file counted once, the refused one too
    # the 5 MB file moves the bar in 1 MiB steps, not once per 64 KiB block
    assert [n for n, done in calls if not done] == [1 << 20] * 4


def test_a_file_larger_than_recorded_is_read_one_byte_past_its_size(tmp_path: Path) -> None:
    contents = _files(tmp_path)
    out = datasets._hash_local_files(str(tmp_path), ["big.bin"], {"big.bin": 100}, threading.Event(),
                                     lambda n, done: None)
    assert out["big.bin"] == ("ok", hashlib.sha256(contents["big.bin"][:101]).hexdigest(), 101)


def test_a_set_stop_flag_ends_hashing_before_the_next_block(tmp_path: Path) -> None:
    _files(tmp_path)
    stop = threading.Event()
    stop.set()
    assert datasets._hash_local_files(str(tmp_path), ["big.bin"], {}, stop, lambda n, done: None) == {}


def test_the_read_policy_holds_for_symlinks_and_dotdot(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "real.bin").write_bytes(b"inside")
    (tmp_path / "secret.txt").write_bytes(b"outside")
    (root / "link-in.bin").symlink_to(root / "sub" / "real.bin")
    (root / "link-out.bin").symlink_to(tmp_path / "secret.txt")
    (root / "dir-out").symlink_to(tmp_path)
    names = ["sub/real.bin", "link-in.bin", "link-out.bin", "dir-out/secret.txt", "../secret.txt",
             "sub/../sub/real.bin", "sub/missing.bin"]
    out = datasets._hash_local_files(str(root.resolve()), names, {}, threading.Event(), lambda n, done: None)
    inside = ("ok", hashlib.sha256(b"inside").hexdigest(), 6)
    assert out["sub/real.bin"] == out["link-in.bin"] == out["sub/../sub/real.bin"] == inside
    for name in ("link-out.bin", "dir-out/secret.txt", "../secret.txt"):
        assert out[name][0] == "error" and "outside the dataset's folder" in out[name][1]
    assert out["sub/missing.bin"] == ("missing", "file not found")
