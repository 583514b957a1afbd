"""Several extraction processes on one machine (``imret index --workers N``).

Each worker process builds the extractor once, runs ``plan.intra`` torch threads and
its own decode thread, and describes chunks of a few photos; the parent only hands
out chunks and hears the results, in the order they finish. The parent alone
writes the journal (through ``on_result``), exactly as the in-process loop does, so
a run killed at any point resumes from what was journaled. Workers watch their
parent and exit when it is gone (a ``kill -9`` of the parent leaves no orphans).
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable

import numpy as np

from ..errors import ImretError
from ..extractor import ExtractionResult, Extractor
from ..core.threads import ThreadPlan

CHUNK = 4  # photos per task: small, so results reach the journal soon and work stays balanced

_WORKER: dict = {}


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)


def _init_worker(parent: int, preset_dict: dict, head_state, kwargs: dict, intra: int, interop: int) -> None:
    import torch

    from ..config import Preset

    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(intra)
    try:
        torch.set_num_interop_threads(interop)
    except RuntimeError:
        pass
    _WORKER["ex"] = Extractor(Preset.from_dict(preset_dict), head_state=head_state, **kwargs)


def _describe_chunk(paths: list[str]) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    res = _WORKER["ex"].extract_paths(paths)
    return res.paths, res.descriptors, res.failures


class ParallelExtractor:
    """An ``Extractor`` whose ``extract_paths`` runs in ``plan.workers`` processes; everything
    else (``extract``, ``dim``, ``preset`` …) is the wrapped extractor's, in this process."""

    def __init__(self, extractor: Extractor, plan: ThreadPlan, head_state: dict | None = None,
                 chunk: int = CHUNK):
        self._ex = extractor
        self.plan = plan
        self.head_state = head_state
        self.chunk = chunk

    def __getattr__(self, name):
        return getattr(self._ex, name)

    def extract_paths(self, paths: Iterable[str], progress: bool = False,
                      on_error: Callable[[str, str], None] | None = None,
                      on_result: Callable[[str, np.ndarray], None] | None = None) -> ExtractionResult:
        """As ``Extractor.extract_paths`` (same results, in the order of ``paths``)."""
        paths = list(paths)
        # Starting a worker costs an interpreter, torch and the weights: not worth it for a few photos.
        if self.plan.workers < 2 or len(paths) < 2 * self.chunk:
            return self._ex.extract_paths(paths, progress=progress, on_error=on_error, on_result=on_result)
        ex = self._ex
        kwargs = {"device": str(ex.device), "max_pixels": ex.max_pixels, "threads": None,
                  "batch": ex.batch, "batch_pixels": ex.batch_pixels,
                  "channels_last": ex.channels_last, "runtime": ex.runtime}
        chunks = [paths[i:i + self.chunk] for i in range(0, len(paths), self.chunk)]
        raw_of: dict[str, np.ndarray] = {}
        failures: list[tuple[str, str]] = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(paths), unit="img", desc=f"extracting ({self.plan.workers} processes)",
                       dynamic_ncols=True)
        pool = ProcessPoolExecutor(self.plan.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker,
                                   initargs=(os.getpid(), ex.preset.to_dict(), self.head_state, kwargs,
                                             self.plan.intra, self.plan.interop))
        try:
            pending = {pool.submit(_describe_chunk, c) for c in chunks}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    ok, desc, failed = fut.result()
                    for p, v in zip(ok, desc):
                        raw_of[p] = v
                        if on_result:
                            on_result(p, v)
                    for p, reason in failed:
                        failures.append((p, reason))
                        if on_error:
                            on_error(p, reason)
                    if bar:
                        bar.update(len(ok) + len(failed))
        except BrokenProcessPool:
            raise ImretError(f"an extraction process died (out of memory?) after {len(raw_of)} of {len(paths)} "
                             "photos; what was extracted is journaled: rerun the same command to resume, "
                             "or use fewer --workers") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if bar:
                bar.close()
        ok = [p for p in paths if p in raw_of]
        desc = np.stack([raw_of[p] for p in ok]).astype(np.float32) if ok else np.zeros((0, ex.dim), np.float32)
        return ExtractionResult(desc, ok, failures)
