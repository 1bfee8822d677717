"""Baselines of benchmark 4: hashing the dataset's files without the bot.

    python -m bench.workers.hash_files single --dir DATA --manifest files.json
    python -m bench.workers.hash_files procs --dir DATA --manifest files.json [--n N]
    python -m bench.workers.hash_files sdk --dir DATA --manifest files.json --dataset ID

- `single`: one thread, `hashlib.sha256` over each file read in 1 MiB blocks (`readinto`, no copies): the
  single-thread rate the target multiplies by the core count.
- `procs`: the same in N processes (default: the core count), each hashing an equal share: what this machine can
  actually do in parallel at that moment (other load included), reported beside the cores x single figure.
- `sdk`: the clearml SDK: `Dataset.get(dataset_id=ID)` (not timed), then `verify_dataset_hash(local_copy_path=DIR)`
  (timed), which hashes every file in a ThreadPool of `psutil.cpu_count()` threads.

Every mode checks the hashes against the manifest (relative path -> sha256) and reports mismatches, so that a
fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import emit, peak_rss_mb

BLOCK = 1 << 20


def hash_file(path: str) -> str:
    digest = hashlib.sha256()
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def hash_share(paths: list[str]) -> dict[str, str]:
    return {p: hash_file(p) for p in paths}


def run(mode: str, data: Path, manifest: dict[str, str], n: int, dataset: str | None) -> dict[str, Any]:
    paths = {rel: str(data / rel) for rel in manifest}
    total = sum(os.path.getsize(p) for p in paths.values())
    mismatches: int
    if mode == "single":
        started = time.perf_counter()
        got = hash_share(list(paths.values()))
        elapsed = time.perf_counter() - started
        mismatches = sum(1 for rel, p in paths.items() if got[p] != manifest[rel])
    elif mode == "procs":
        ordered = sorted(paths.values(), key=os.path.getsize, reverse=True)
        shares = [ordered[i::n] for i in range(n)]
        with ProcessPoolExecutor(max_workers=n) as pool:
            list(pool.map(len, shares))  # start the processes before the clock
            started = time.perf_counter()
            parts = list(pool.map(hash_share, shares))
            elapsed = time.perf_counter() - started
        got = {k: v for part in parts for k, v in part.items()}
        mismatches = sum(1 for rel, p in paths.items() if got[p] != manifest[rel])
    else:
        from clearml import Dataset

        ds = Dataset.get(dataset_id=dataset)
        started = time.perf_counter()
        wrong = ds.verify_dataset_hash(local_copy_path=str(data), skip_hash=False)
        elapsed = time.perf_counter() - started
        mismatches = len(wrong)
    return {"mode": mode, "bytes": total, "files": len(paths), "seconds": elapsed, "mb_per_s": total / 1e6 / elapsed,
            "mismatches": mismatches, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["single", "procs", "sdk"])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--n", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--dataset")
    args = parser.parse_args()
    manifest = json.loads(args.manifest.read_text())
    emit(run(args.mode, args.dir, manifest, args.n, args.dataset))


if __name__ == "__main__":
    main()
