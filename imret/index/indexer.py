"""How photos get into an index file: one path for ``imret index`` (local loop or Ray),
``imret add`` and the service's add endpoint.

``Indexer.build`` extracts (journaled and resumable, or through a ``RawSource`` such
as the Ray engine's shards), learns the whitening, stores αDBA, the trained head's
weights and the local features, saves and then drops the journals. ``extract_batch``
and ``apply_batch`` split an add in two, so that a server extracts outside its write
lock and changes the index inside it.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core.paths import collect_paths
from ..rerank import FROM_PRESET, GlobalFeatureRerank, resolve
from .safety import discard_finished_journal, refuse_empty, repair_local
from .store import Index, IndexReport

# (paths, the extractor) → (paths extracted, their raw descriptors, failures), e.g. Ray's shards
RawSource = Callable[[list[str], object], "tuple[list[str], np.ndarray, list[tuple[str, str]]]"]


@dataclass
class Batch:
    """Photos extracted for an index and not added yet: raw global descriptors, and local
    features when the index holds them."""

    paths: list[str]
    raw: np.ndarray
    local: list | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)


def extract_batch(index: Index, paths: list[str]) -> Batch:
    """Extract ``paths`` with ``index``'s extractors, without changing the index."""
    res = index.extractor().extract_paths(paths)
    local = None
    if index.local is not None:
        ex = index.local.extractor()
        local = [ex.extract(p) for p in res.paths]
    return Batch(list(res.paths), np.asarray(res.descriptors, np.float32), local, list(res.failures))


def apply_batch(index: Index, batch: Batch, roots=()) -> np.ndarray:
    """Add ``batch`` to ``index`` (under ``roots``, the folders it was read from); the new ids."""
    index.add_roots(roots)
    index.add_descriptors(batch.paths, batch.raw)
    ids = index.ids[len(index) - len(batch.paths):]
    if batch.local:
        index.local.add_features(zip(ids.tolist(), batch.local))
    return ids


def local_extractor(name: str = "delf", attention: str | None = None, index: str | None = None, device=None):
    """(extractor, store or None): an index's local features (their config, attention and
    PCA), else a trained attention file's config and weights, else the named config with
    the attention the package ships trained for it (if any)."""
    if index is not None:
        store = Index.load(index).local_store()
        return store.extractor(device), store
    from ..local.config import get_local_config
    from ..local.extract import LocalExtractor
    from ..local.train import load_attention, shipped_attention_state

    if attention is not None:
        cfg, state = load_attention(attention)
        return LocalExtractor(cfg, state, device=device), None
    cfg = get_local_config(name)
    # the pyramid and the matching recipe stay the named config's own
    return LocalExtractor(cfg, shipped_attention_state(cfg), device=device), None


def build_local(index, name: str = "delf", attention: str | None = None, device=None, progress: bool = False,
                on_error: Callable[[str, str], None] | None = None, journal_path: str | None = None) -> None:
    """Extract and attach local features for every image of ``index`` (saved with it);
    with ``journal_path``, resumable after a crash (``Index.local_journal_path``)."""
    from ..local.store import LocalStore

    ex, _ = local_extractor(name, attention, device=device)
    index.local = LocalStore.build(index.paths, index.ids, ex, progress=progress, on_error=on_error,
                                   journal_path=journal_path, journal_header={"mode": "build"})


def _journal(out: str) -> str:
    return out + ".journal"


@dataclass
class Indexer:
    """Builds and extends index files with one model: ``preset`` with its trained
    ``head_state``, optional αDBA ``dba`` (a ``DBA`` step) and ``gfr`` database side (both
    taken from the preset's re-ranking when it has them), and local features by the
    config ``local`` (and trained ``attention`` file) when either is given."""

    preset: object
    head_state: dict | None = None
    device: str | None = None
    dba: object = None
    gfr: object = None  # a GlobalFeatureRerank step: its database side is stored (like αDBA's rows)
    local: str | None = None
    attention: str | None = None
    progress: bool = False
    on_error: Callable[[str, str], None] | None = None
    threads: object = None  # a ThreadPlan; with more than one worker, extraction runs in that many processes

    def __post_init__(self):
        # the database side of the preset's own re-ranking is stored, as --dba and --gfr store
        # theirs, so that its searches do not find every image's neighbours again
        pipeline = resolve(FROM_PRESET, self.preset.rerank)
        if pipeline is not None:
            if self.dba is None:
                self.dba = pipeline.database_step
            if self.gfr is None:
                self.gfr = next((s for s in pipeline.steps if isinstance(s, GlobalFeatureRerank)
                                 and s.scope == "database"), None)

    def extractor(self):
        from ..extractor import Extractor

        ex = Extractor(self.preset, device=self.device, head_state=self.head_state)
        if self.threads is not None and self.threads.workers > 1:
            from .workers import ParallelExtractor

            ex = ParallelExtractor(ex, self.threads, head_state=self.head_state)
        return ex

    def build(self, sources, out: str, whitening_sources=None, raw_source: RawSource | None = None
              ) -> tuple[Index, IndexReport]:
        """Index ``sources`` into the file ``out``, resuming an interrupted run's journal;
        with ``raw_source`` the global descriptors come from it (e.g. Ray workers)."""
        t0 = time.time()
        ex = self.extractor()
        journal = _journal(out)
        if raw_source is None:
            index, report = Index.build(sources, self.preset, extractor=ex, progress=self.progress,
                                        on_error=self.on_error, whitening_sources=whitening_sources,
                                        journal_path=journal)
        else:
            report = IndexReport()
            record = report.failed(self.on_error)
            ok, raw, failures = raw_source(collect_paths(sources, on_error=record), ex)
            for p, reason in failures:
                record(p, reason)
            index = Index.from_raw(self.preset, ex.dim, ok, raw, sources)
            index.set_extractor(ex)
            index.head_state = ex.loaded_state  # the weights used, as Index.build keeps them
            report.indexed = len(ok)
        refuse_empty(report, out, sources)  # an index of nothing never replaces one
        if self.dba is not None:
            index.set_dba(self.dba)
        if self.gfr is not None:
            index.set_gfr(self.gfr)
        if self.local is not None or self.attention is not None:
            build_local(index, self.local or "delf", self.attention, device=self.device, progress=self.progress,
                        on_error=self.on_error, journal_path=Index.local_journal_path(journal))
        index.save(out)
        Index.finish_journal(journal)
        report.seconds = time.time() - t0
        return index, report

    @staticmethod
    def add(path: str, sources, device=None, progress: bool = False, on_error=None) -> tuple[Index, IndexReport]:
        """Add the photos of ``sources`` the index file ``path`` lacks (journaled, resumable)."""
        index = Index.load(path)
        index.extractor(device=device)
        # local features a killed run left missing are extracted now, and the journal of a
        # run that did finish is no unfinished run
        repaired = repair_local(index, _journal(path), progress=progress, on_error=on_error)
        if repaired:  # said even when quiet: the index was damaged
            print(f"repaired: extracted the missing local features of {repaired} images", file=sys.stderr)
        discard_finished_journal(index, _journal(path))
        report = index.add(sources, progress=progress, on_error=on_error, journal_path=_journal(path))
        index.save(path)
        Index.finish_journal(_journal(path))
        return index, report

    @staticmethod
    def journal_of(out: str) -> str:
        """The journal of a run writing ``out`` (it exists while the run is unfinished)."""
        return _journal(out)

    @staticmethod
    def local_journal_of(out: str) -> str:
        return Index.local_journal_path(_journal(out))


