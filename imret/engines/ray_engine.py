"""Distributed extraction with Ray Data.

The image list is cut into shards; each Ray worker builds the extractor once and
writes one file per shard (paths + raw descriptors, no pickle) to ``shards_dir``,
atomically. A shard's file name carries a fingerprint of its images and of the
extraction settings, so a re-run skips exactly the shards already written with the
same settings (an interrupted run resumes; a run with another preset, head or shard
size starts afresh). ``merge_shards`` reads them back in order for the final index.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from ..config import Preset
from ..core.atomic import atomic_write
from ..index.fileformat import decode_paths, encode_paths

SHARD_PATTERN = "shard-{:06d}-{}.npz"


@dataclass(frozen=True)
class RayConfig:
    """``address``: an existing cluster (None starts a local one); ``workers``: extractor
    actors; ``object_store_mb`` caps the local object store (the images never travel
    through it: workers read files themselves)."""

    address: str | None = None
    workers: int = 2
    shard_size: int = 256
    object_store_mb: int = 256
    threads_per_worker: int = 1


def _write_shard(path: str, paths: list[str], raw: np.ndarray, failures: list[tuple[str, str]]) -> None:
    atomic_write(path, lambda tmp: np.savez(
        tmp, paths=encode_paths(paths), n=np.array(len(paths)), raw=raw.astype(np.float32),
        failed=encode_paths([p for p, _ in failures]), reasons=encode_paths([r for _, r in failures]),
        nfailed=np.array(len(failures))), prefix=".shard-", suffix=".npz")


def read_shard(path: str) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    with np.load(path, allow_pickle=False) as z:
        paths = decode_paths(z["paths"], int(z["n"]))
        nf = int(z["nfailed"])
        failures = list(zip(decode_paths(z["failed"], nf), decode_paths(z["reasons"], nf)))
        return paths, np.array(z["raw"], np.float32), failures


class _ShardWorker:
    """A Ray actor: one extractor, many shards."""

    def __init__(self, preset_dict: dict, shards_dir: str, threads: int, head_state=None):
        import torch

        from ..extractor import Extractor

        torch.set_num_threads(threads)
        self.extractor = Extractor(Preset.from_dict(preset_dict), device="cpu", head_state=head_state)
        self.shards_dir = shards_dir

    def __call__(self, batch: dict) -> dict:
        done = []
        for shard, name, paths in zip(batch["shard"], batch["name"], batch["paths"]):
            res = self.extractor.extract_paths(list(paths))
            _write_shard(os.path.join(self.shards_dir, str(name)), res.paths, res.descriptors, res.failures)
            done.append(int(shard))
        return {"shard": np.array(done, np.int64)}


def plan_shards(paths: list[str], shard_size: int) -> list[list[str]]:
    return [paths[i:i + shard_size] for i in range(0, len(paths), shard_size)]


def settings_key(preset: Preset, head_state=None) -> str:
    """What makes two runs' descriptors interchangeable: the preset and the head's weights."""
    from ..core.digest import state_digest

    return json.dumps({"preset": preset.to_dict(), "head": state_digest(head_state)}, sort_keys=True)


def shard_files(paths: list[str], shard_size: int, key: str) -> list[tuple[str, list[str]]]:
    """(file name, images) of each shard of ``paths`` under the settings ``key``."""
    out = []
    for i, shard in enumerate(plan_shards(paths, shard_size)):
        h = hashlib.sha256(key.encode())
        for p in shard:
            h.update(os.fsencode(p) + b"\0")
        out.append((SHARD_PATTERN.format(i, h.hexdigest()[:16]), shard))
    return out


def extract_with_ray(paths: list[str], preset: Preset, shards_dir: str, cfg: RayConfig = RayConfig(),
                     head_state=None, progress: bool = False) -> dict:
    """Write every missing shard of ``paths`` to ``shards_dir``; returns counts."""
    import ray

    os.makedirs(shards_dir, exist_ok=True)
    shards = shard_files(paths, cfg.shard_size, settings_key(preset, head_state))
    todo = [i for i, (name, _) in enumerate(shards) if not os.path.exists(os.path.join(shards_dir, name))]
    stats = {"shards": len(shards), "skipped_shards": len(shards) - len(todo), "extracted_shards": len(todo)}
    if not todo:
        return stats
    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if cfg.address:
            ray.init(address=cfg.address, **kwargs)
        else:
            ray.init(num_cpus=max(1, cfg.workers * cfg.threads_per_worker),
                     object_store_memory=cfg.object_store_mb * 1024 * 1024, **kwargs)
        started = True
    try:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        items = [{"shard": i, "name": shards[i][0], "paths": shards[i][1]} for i in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        out = ds.map_batches(_ShardWorker, batch_size=1,
                             fn_constructor_args=(preset.to_dict(), os.path.abspath(shards_dir),
                                                  cfg.threads_per_worker, head_state),
                             concurrency=min(cfg.workers, len(items)), num_cpus=cfg.threads_per_worker)
        written = sorted(int(s) for s in out.to_pandas()["shard"])
        if written != todo:
            raise RuntimeError(f"Ray finished shards {written}, expected {todo}")
    finally:
        if started:
            ray.shutdown()
    return stats


def merge_shards(paths: list[str], shards_dir: str, shard_size: int, dim: int, preset: Preset, head_state=None
                 ) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """(extracted paths, N×dim raw descriptors, failures) in the order of ``paths``, from
    the shards ``extract_with_ray`` wrote with the same arguments."""
    ok, rows, failures = [], [], []
    for i, (name, expected) in enumerate(shard_files(paths, shard_size, settings_key(preset, head_state))):
        p, raw, f = read_shard(os.path.join(shards_dir, name))
        if set(p) - set(expected):
            raise RuntimeError(f"shard {i} in {shards_dir} was made from other images; delete the folder")
        ok += p
        rows.append(raw.reshape(-1, dim))
        failures += f
    raw = np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)
    return ok, raw, failures


def clear_shards(shards_dir: str) -> None:
    for f in glob.glob(os.path.join(shards_dir, "shard-*.npz")):
        os.unlink(f)
    try:
        os.rmdir(shards_dir)
    except OSError:
        pass
