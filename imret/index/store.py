"""``Index``: descriptors of a photo collection, their paths, and how they were made.

Three parts behind it: the ``Catalog`` (ids, paths, roots; ``catalog.py``), the
``VectorStore`` (whitening, rows, backend; ``vectors.py``) and the sidecars (αDBA rows,
gfr rows, local features; ``sidecars.py``). ``append_rows`` and ``remove`` are the only
two changes, and hand every part the same ids and the same row mask.

The index knows the ``Preset`` that built it (and any whitening it learned), so
``Index.load(path).search_image(photo)`` needs nothing else. Database
descriptors are float32 rows, L2-normalised, whitened when the index learned a
whitening. Each image keeps a stable integer id across ``add``/``remove``.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ..core import __version__
from ..config import Preset
from ..descriptor.whitening import Transform, learn
from ..core.errors import ImretError, IndexFileError
from ..core.paths import collect_paths
from ..rerank import DBA, FROM_PRESET, AugmentedRows, Database, GlobalFeatureRerank, Pipeline, Shortlist, resolve
from .backends import tuning_keys
from .catalog import Catalog
from .fileformat import read_container, write_container
from .sidecars import SIDECARS, LocalSidecar, RowsSidecar, Sidecar
from .vectors import VectorStore


@dataclass(frozen=True)
class Hit:
    """``score`` ranks the hits; ``cosine``: the descriptor similarity alone (the query's, not
    its re-ranked expansion's, and before spatial verification added its inlier bonus;
    equal to ``score`` without re-ranking).
    ``inliers``/``verified``/``matches``: set by spatial verification (``--rerank sv``):
    the inlier count, whether it reached the step's ``min_inliers``, and the K×4
    (query x, y, result x, y) inlier matches in original pixels."""

    rank: int
    score: float
    id: int
    path: str
    inliers: int | None = None
    matches: np.ndarray | None = field(default=None, repr=False, compare=False)
    cosine: float | None = None
    verified: bool | None = None

    def __post_init__(self):
        if self.cosine is None:
            object.__setattr__(self, "cosine", self.score)

    def verification(self, matches: bool = True) -> dict:
        """What spatial verification found, for JSON: {} when it did not run on this hit, else
        the inlier count, whether that verifies the hit, and (with ``matches``) the inlier
        matches [query x, y, result x, y] in pixels (0.1 px)."""
        if self.inliers is None:
            return {}
        out = {"inliers": int(self.inliers), "verified": bool(self.verified)}
        if matches:
            m = np.zeros((0, 4)) if self.matches is None else np.asarray(self.matches, np.float64)
            out["matches"] = np.round(m, 1).tolist()
        return out


@dataclass
class IndexReport:
    """What one ``build``/``add`` did: images indexed, files skipped with reasons, paths already present."""

    indexed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    already: int = 0
    resumed: int = 0  # taken from an interrupted run's journal, not extracted again
    seconds: float = 0.0

    def failed(self, on_error=None):
        """A callback that records a skipped file and passes it on."""
        def record(path, reason):
            self.skipped.append((path, reason))
            if on_error:
                on_error(path, reason)
        return record

    def summary(self) -> str:
        s = f"indexed {self.indexed}, skipped {len(self.skipped)}"
        if self.already:
            s += f", already in the index {self.already}"
        if self.resumed:
            s += f", resumed {self.resumed} from an interrupted run"
        if self.skipped:
            reasons: dict[str, int] = {}
            for _, r in self.skipped:
                key = r.split(" (")[0]
                reasons[key] = reasons.get(key, 0) + 1
            s += " [" + "; ".join(f"{n}× {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])) + "]"
        return s + f" ({self.seconds:.1f} s)"


class Index:
    """A catalog (ids, paths, roots), a vector store (whitening, rows, backend) and sidecars
    (αDBA rows, gfr rows, local features: ``sidecars.py``), kept in step by ``append_rows``
    and ``remove``, written and read together by ``save``/``load``."""

    def __init__(self, preset: Preset, dim: int, whitening: Transform | None = None):
        self.preset = preset
        self.catalog = Catalog()
        self.vectors = VectorStore(preset.index, dim, whitening, ids_of=lambda: self.catalog.ids)
        self.sidecars: dict[str, Sidecar] = {}  # by name; row k of each is image k
        self.created = time.time()
        self.head_state: dict | None = None
        self._extractor = None
        self._dba_cache: dict = {}  # αDBA with other parameters than the stored ones, made on request
        self.generation: str | None = None  # the full save this index was read from (delta.py)
        self.delta_records = 0  # changes replayed from PATH.delta on top of it

    # What the catalog and the vector store hold, by the names callers have always used.
    ids = property(lambda self: self.catalog.ids)
    paths = property(lambda self: self.catalog.paths)
    _pos_of = property(lambda self: self.catalog._pos_of)
    descriptors = property(lambda self: self.vectors.rows)
    whitening = property(lambda self: self.vectors.whitening)
    backend = property(lambda self: self.vectors.backend)
    dim = property(lambda self: self.vectors.dim)
    raw_dim = property(lambda self: self.vectors.raw_dim)

    @property
    def next_id(self) -> int:
        return self.catalog.next_id

    @next_id.setter
    def next_id(self, value: int) -> None:
        self.catalog.next_id = int(value)

    @property
    def roots(self) -> list[str]:
        """The folders/files indexed: nothing outside them is ever served."""
        return self.catalog.roots

    @roots.setter
    def roots(self, value) -> None:
        self.catalog.roots = list(value)

    def _sidecar(self, name: str):
        side = self.sidecars.get(name)
        return None if side is None else side.value

    def _set_sidecar(self, name: str, side) -> None:
        if side is None:
            self.sidecars.pop(name, None)
        else:
            self.sidecars[name] = side

    dba = property(lambda self: self._sidecar("dba"),  # stored αDBA rows (AugmentedRows)
                   lambda self, v: self._set_sidecar("dba", None if v is None else RowsSidecar("dba", v)))
    gfr = property(lambda self: self._sidecar("gfr"),  # stored global-feature re-ranking rows
                   lambda self, v: self._set_sidecar("gfr", None if v is None else RowsSidecar("gfr", v)))
    local = property(lambda self: self._sidecar("local"),  # imret.local.LocalStore, saved as PATH.local.h5
                     lambda self, v: self._set_sidecar("local", None if v is None else LocalSidecar(v)))

    def clone(self) -> "Index":
        """An independent copy (catalog, rows, search structure and sidecars copied,
        extractor shared), so a writer can change the copy while readers keep searching
        the original."""
        import copy

        other = copy.copy(self)
        other.catalog = self.catalog.copy()
        other.vectors = self.vectors.clone(ids_of=lambda: other.catalog.ids)
        other.sidecars = {name: side.copy() for name, side in self.sidecars.items()}
        return other

    def add_roots(self, sources) -> None:
        self.catalog.add_roots(sources)

    # -- extraction ---------------------------------------------------------
    def extractor(self, device=None):
        """The extractor that made this index (built once, on first use)."""
        if self._extractor is None:
            from ..extractor import Extractor

            self._extractor = Extractor(self.preset, device=device, head_state=self.head_state)
        return self._extractor

    def local_store(self):
        """The local features (``imret.local.LocalStore``); an error when the index has none."""
        if self.local is None:
            raise ImretError("this index holds no local features: build it with 'imret index --local' "
                             "(or set Index.local) to verify results spatially")
        return self.local

    def set_extractor(self, extractor) -> None:
        if extractor.preset.to_dict() != self.preset.to_dict():
            raise ValueError("the extractor's preset differs from the one that built this index")
        self._extractor = extractor

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        """N×D raw descriptors → the index's descriptor space (whitened, L2)."""
        return self.vectors.process(raw)

    # -- building -----------------------------------------------------------
    @classmethod
    def build(cls, sources, preset: Preset, extractor=None, progress: bool = False,
              on_error: Callable[[str, str], None] | None = None,
              whitening_sources=None, journal_path: str | None = None) -> tuple["Index", IndexReport]:
        """Index the photos in ``sources`` (files or folders). Files that fail are
        reported through ``on_error`` and in the report, and skipped.

        With ``journal_path``, every descriptor is journaled as it is extracted and a
        journal left by an interrupted run is resumed: images it holds are not
        extracted again. The caller deletes the journal once the index is saved
        (``Index.finish_journal``)."""
        from ..extractor import Extractor

        t0 = time.time()
        report = IndexReport()
        extractor = extractor or Extractor(preset)
        paths = collect_paths(sources, on_error=report.failed(on_error))
        header = {"mode": "build", "preset": preset.to_dict(), "head": extractor.head_digest(),
                  "sources": sorted(os.path.abspath(s) for s in sources)}
        ok, raw = cls._extract_journaled(extractor, paths, journal_path, header, report, progress, on_error)
        train = None
        if preset.whitening.kind != "none" and whitening_sources is not None:
            train = extractor.extract_paths(collect_paths(whitening_sources), progress=progress).descriptors
        index = cls.from_raw(preset, extractor.dim, ok, raw, sources, whitening_train=train)
        index._extractor = extractor
        index.head_state = getattr(extractor, "loaded_state", None)  # as the CLI's indexer keeps it
        report.indexed = len(ok)
        report.seconds = time.time() - t0
        return index, report

    @classmethod
    def from_raw(cls, preset: Preset, raw_dim: int, paths: list[str], raw: np.ndarray, sources=(),
                 whitening_train: np.ndarray | None = None) -> "Index":
        """A new index from raw descriptors (N×raw_dim) extracted elsewhere (e.g. by Ray),
        learning the preset's whitening on ``whitening_train`` or on ``raw``."""
        whitening = learn(preset.whitening, raw if whitening_train is None else whitening_train)
        index = cls(preset, raw_dim, whitening)
        index.add_roots(sources)
        index._append(list(paths), raw)
        return index

    @staticmethod
    def _extract_journaled(extractor, paths, journal_path, header, report, progress, on_error):
        """(paths extracted, their raw descriptors) in the order of ``paths``, resuming a journal."""
        from .journal import Journal

        journal = Journal(journal_path, header, extractor.dim) if journal_path else None
        done_paths, done_raw = journal.read() if journal else ([], None)
        raw_of = dict(zip(done_paths, done_raw)) if done_paths else {}
        todo = [p for p in paths if p not in raw_of]
        report.resumed = len(paths) - len(todo)
        if journal:
            journal.open()
        try:
            res = extractor.extract_paths(todo, progress=progress, on_error=report.failed(on_error),
                                          on_result=journal.append if journal else None)
        finally:
            if journal:
                journal.close()
        raw_of.update(zip(res.paths, res.descriptors))
        ok = [p for p in paths if p in raw_of]
        raw = np.stack([raw_of[p] for p in ok]).astype(np.float32) if ok else np.zeros((0, extractor.dim), np.float32)
        return ok, raw

    @staticmethod
    def local_journal_path(journal_path: str | None) -> str | None:
        """Where the local features of the run journaled at ``journal_path`` are journaled."""
        if not journal_path:
            return None
        stem = journal_path[:-len(".journal")] if journal_path.endswith(".journal") else journal_path
        return stem + ".local.journal"

    @staticmethod
    def finish_journal(journal_path: str | None) -> None:
        """Delete the journals of a run whose index has been saved."""
        for p in (journal_path, Index.local_journal_path(journal_path)):
            if p:
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass

    def _append(self, paths: list[str], raw: np.ndarray) -> None:
        if not paths:
            return
        self.append_rows(self.catalog.new_ids(len(paths)), paths, self.postprocess(raw))

    def append_rows(self, ids: np.ndarray, paths: list[str], rows: np.ndarray) -> None:
        """Add images under ``ids`` (new, larger than every id held) with their processed
        N×dim ``rows``; the search structure and the sidecars follow."""
        ids = np.asarray(ids, np.int64)
        rows = np.asarray(rows, np.float32)
        if rows.shape != (len(paths), self.dim) or ids.shape != (len(paths),):
            raise ValueError(f"{len(paths)} paths, {ids.shape} ids and {rows.shape} rows (dim {self.dim}) disagree")
        self.catalog.append(ids, paths)
        self.vectors.append(ids, rows)
        self._sidecars_changed(lambda side: side.added(ids, self.descriptors))

    def add(self, sources, progress: bool = False, on_error=None, journal_path: str | None = None) -> IndexReport:
        """Extract and add the photos in ``sources`` that the index does not hold yet
        (journaled and resumable like ``build``)."""
        t0 = time.time()
        report = IndexReport()
        paths = collect_paths(sources, on_error=report.failed(on_error))
        new = [p for p in paths if p not in self.catalog]
        report.already = len(paths) - len(new)
        header = {"mode": "add", "preset": self.preset.to_dict(), "head": self.extractor().head_digest(),
                  "created": self.created,
                  "sources": sorted(os.path.abspath(s) for s in sources)}
        ok, raw = self._extract_journaled(self.extractor(), new, journal_path, header, report, progress, on_error)
        self.add_roots(sources)
        self._append(ok, raw)
        if self.local is not None and ok:
            self.local.add(ok, self.ids[-len(ok):], progress=progress, on_error=on_error,
                           journal_path=self.local_journal_path(journal_path),
                           journal_header={"mode": "add", "created": self.created})
        report.indexed = len(ok)
        report.seconds = time.time() - t0
        return report

    def add_descriptors(self, paths: list[str], raw: np.ndarray) -> None:
        """Add precomputed raw descriptors (N×raw_dim) for ``paths``."""
        raw = np.atleast_2d(np.asarray(raw, np.float32))
        if raw.shape != (len(paths), self.raw_dim):
            raise ValueError(f"expected {len(paths)}×{self.raw_dim} descriptors, got {raw.shape}")
        dup = [p for p in paths if p in self.catalog]
        if dup:
            raise ValueError(f"already in the index: {dup[:3]}")
        self._append(list(paths), raw)

    def remove(self, paths_or_ids: Iterable) -> list[str]:
        """Remove images by path (files, or folders: everything indexed under them) or id.
        Returns the paths removed."""
        drop = self.catalog.select(paths_or_ids)
        if not drop.any():
            return []
        keep = ~drop
        removed = [p for p, d in zip(self.paths, drop) if d]
        removed_ids = self.ids[drop]
        self.catalog.keep(keep)
        self.vectors.keep(keep, removed_ids)
        self._sidecars_changed(lambda side: side.removed(keep, removed_ids, self.descriptors))
        return removed

    # -- search -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.paths)

    def tune(self, **settings) -> None:
        """Change search settings of the approximate backends (``ef_search``, ``nprobe``,
        ``rescore``) for this object's later searches; saved with the index if it is saved."""
        allowed = set(tuning_keys())
        if set(settings) - allowed:
            raise ValueError(f"only {', '.join(sorted(allowed))} can be tuned, not {sorted(set(settings) - allowed)}")
        cfg = self.preset.index.replace(**settings)  # validated here
        self.preset = self.preset.replace(index=cfg)
        self.vectors.tune(cfg)

    def search(self, query_raw: np.ndarray, top: int = 10, rerank=FROM_PRESET, query_local=None) -> list[list[Hit]]:
        """Q×raw_dim raw query descriptors (as the extractor gives them) → per query, ranked hits."""
        q = self.postprocess(query_raw)
        return self.search_processed(q, top, rerank=rerank, query_local=query_local)

    def search_processed(self, q: np.ndarray, top: int = 10, rerank=FROM_PRESET, query_local=None
                         ) -> list[list[Hit]]:
        """Q×dim descriptors in the index's space → ranked hits. Approximate backends
        return a shortlist that is re-scored exactly against the stored rows.

        ``rerank``: a ``imret.rerank.Pipeline`` or its text ('aqe', 'dba:k=3,aqe:n=3'):
        the first search returns the pipeline's shortlist, its steps re-rank it; 'preset'
        (the default): the steps the index's preset bundles (``Preset.rerank``, most
        presets none); None or 'none': no re-ranking. An
        index with stored αDBA rows (``set_dba``) is always searched through them.
        Spatial verification (``sv``) needs the index's local features and ``query_local``:
        each query's (``local.query``; ``search_image`` makes them)."""
        from ..local.steps import bind_index

        q = np.atleast_2d(np.asarray(q, np.float32))
        pipeline = self.resolve_rerank(rerank)
        pipeline, verified = bind_index(pipeline, self, query_local, len(q))
        rows = self.search_rows(pipeline)
        reranking = pipeline is not None and bool(pipeline.shortlist_steps) and len(self) > 0
        depth = max(top, pipeline.depth) if reranking else top
        scores, pos = self._search_rows(q, rows, depth)
        if reranking:
            # re-ranking steps search the whole index again through this same path (hook)
            db = Database(rows, lambda qq, k, scored=None: self._search_rows(qq, rows, k, scored)[::-1],
                          {} if self.gfr is None or pipeline.database_step else {self.gfr.step: self.gfr})
            sl = pipeline.rerank(Shortlist(q, pos, scores.astype(np.float32)), rows, db)
            scores, pos = sl.scores, sl.ranks
        scores, pos = scores[:, :top], pos[:, :top]

        def fields(qi: int, p: int) -> dict:
            # after re-ranking (verification included, whatever ran before it), a hit's cosine
            # stays the query's own similarity to it: expansion raises the scores of whatever
            # comes first, so a match called on them would say "match" even where the
            # collection holds none (bench_min_score.py)
            own = {"cosine": float(q[qi] @ rows[p])} if reranking else {}
            return {**own, **verified(qi, p)}

        out = []
        for qi, (srow, prow) in enumerate(zip(scores, pos)):
            hits = [Hit(r + 1, float(s), int(self.ids[p]), self.paths[p], **fields(qi, p))
                    for r, (s, p) in enumerate((s, p) for s, p in zip(srow, prow) if p >= 0)]
            out.append(hits)
        return out

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of image ``ids`` (any shape); −1 for −1 and for ids not held."""
        return self.catalog.positions(ids)

    def _search_rows(self, q: np.ndarray, rows: np.ndarray, depth: int, scored: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(Q×depth scores, positions) of the best ``rows`` for ``q`` through the backend:
        exact, or its candidates re-scored exactly. ``scored``: rows to score against
        instead (re-ranking's updated rows)."""
        return self.vectors.search(q, depth, self.positions, rows if scored is None else scored)

    def resolve_rerank(self, rerank=FROM_PRESET) -> Pipeline | None:
        """The pipeline a search given ``rerank`` runs ('preset': this index's preset's)."""
        return resolve(rerank, self.preset.rerank)

    def search_image(self, image, top: int = 10, bbox=None, rerank=FROM_PRESET) -> list[Hit]:
        """A path or H×W×3 uint8 array (optionally cropped to ``bbox`` x0,y0,x1,y1) → ranked hits
        (``rerank`` as ``search_processed`` takes it)."""
        from ..local.steps import needs_local

        rerank = self.resolve_rerank(rerank)
        query_local = None
        if needs_local(rerank):
            if isinstance(image, (str, os.PathLike)):  # read once for both extractions
                image, bbox = self.extractor().load(image, bbox), None
            query_local = [self.local_store().query(image, bbox=bbox)]
        return self.search(self.extractor().extract(image, bbox=bbox)[None], top, rerank=rerank,
                           query_local=query_local)[0]

    # -- αDBA ---------------------------------------------------------------
    def set_dba(self, step: DBA | None) -> None:
        """Store αDBA rows made with ``step`` (None drops them). They are saved with the
        index, updated for the rows whose neighbours change on add/remove, and every
        search then compares queries with them."""
        self.dba = None if step is None else AugmentedRows.build(step, self.descriptors)
        self._dba_cache = {}

    def search_rows(self, pipeline: Pipeline | None = None) -> np.ndarray:
        """The rows queries are compared with: the stored αDBA rows, or, when ``pipeline``
        asks for αDBA with other parameters, such rows made now (kept until the next change)."""
        step = None if pipeline is None else pipeline.database_step
        if step is None or self.dba is not None and self.dba.step == step:
            return self.descriptors if self.dba is None else self.dba.rows
        if step not in self._dba_cache:
            self._dba_cache = {step: step.augment(self.descriptors)}
        return self._dba_cache[step]

    def set_gfr(self, step: GlobalFeatureRerank | None) -> None:
        """Store the database side of global-feature re-ranking made with ``step`` (each
        image updated from its k nearest images of the whole index; None drops it): saved
        with the index, kept current on add/remove, used by ``gfr`` searches with the same
        k, alpha, weights and self_weight."""
        self.gfr = None if step is None else AugmentedRows.build(step, self.descriptors)

    def _sidecars_changed(self, update) -> None:
        # assignments, not in-place changes: a clone() shares the rows sidecars with its original
        self._dba_cache = {}
        self.sidecars = {name: update(side) for name, side in self.sidecars.items()}

    def path_of(self, image_id: int) -> str:
        return self.catalog.path_of(image_id)

    # -- persistence --------------------------------------------------------
    def head_weights(self) -> str | None:
        """Whose head weights this index holds: "shipped" (its preset's, as packaged), "own"
        (others: ``--adapt``, ``--checkpoint``, an earlier release's shipped file), or None (a
        head with nothing to learn)."""
        if not self.head_state:
            return None
        from ..core.digest import weights_digest
        from ..heads.trained import shipped_for

        # an index stores the shipped head as Extractor runs it: float_state(), tensor for tensor
        shipped = shipped_for(self.preset)
        same = shipped is not None and weights_digest(shipped.float_state()) == weights_digest(self.head_state)
        return "shipped" if same else "own"

    def info(self) -> dict:
        return {
            "images": len(self),
            "head_weights": self.head_weights(),
            "dim": self.dim,
            "raw_dim": self.raw_dim,
            "whitening": None if self.whitening is None else self.whitening.header(),
            "backend": self.backend.name,
            "preset": self.preset.to_dict(),
            "created": self.created,
            "bytes_per_image": int(self.descriptors.itemsize * self.dim),
            "dba": None if self.dba is None else self.dba.step.to_dict(),
            "gfr": None if self.gfr is None else self.gfr.step.to_dict(),
            "delta_records": int(self.delta_records),
            "local": None if self.local is None else {
                **self.local.info(), "missing": [int(i) for i in getattr(self, "local_missing", [])]},
        }

    def save(self, path: str | os.PathLike) -> None:
        meta = {
            "imret_version": __version__,
            "preset": self.preset.to_dict(),
            **self.catalog.header(),
            **self.vectors.header(),
            "created": self.created,
            "saved": time.time(),
            "head_state": sorted(self.head_state) if self.head_state else [],
            **{name: None for name in SIDECARS},  # the in-file sidecars this index holds none of
        }
        arrays = {**self.catalog.arrays(), **self.vectors.arrays()}
        if self.head_state:
            arrays.update({f"head/{k}": v.detach().cpu().numpy() for k, v in self.head_state.items()})
        for name, side in self.sidecars.items():
            if name in SIDECARS:  # kept in this file; the others write their own (local, below)
                meta[name] = side.header()
                arrays.update(side.arrays())
        from ..local import local_path
        from .safety import pending_local_path, promote_local

        local_file = local_path(path)
        meta["generation"] = uuid.uuid4().hex  # which full save this is: a delta log names its base
        if self.local is not None:
            # the index file commits both parts (safety.py): the local part is written first,
            # under a name no reader opens until the index file names its generation
            meta["local_generation"] = uuid.uuid4().hex
            self.local.save(pending_local_path(local_file), owner=repr(self.created),
                            generation=meta["local_generation"])
        write_container(path, meta, arrays)
        if self.local is not None:
            promote_local(local_file)
            self.local.moved_to(local_file)
        else:
            for stale in (local_file, pending_local_path(local_file)):
                if os.path.exists(stale):
                    os.unlink(stale)  # local features of an earlier index saved here
        self.generation, self.delta_records = meta["generation"], 0
        from .delta import forget

        forget(path)  # folded in (and stale from now on: it names the old generation)

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False, verify: bool = True) -> "Index":
        meta, arrays = read_container(path, mmap=mmap, verify=verify)
        try:
            preset = Preset.from_dict(meta["preset"])
            index = cls(preset, int(meta["raw_dim"]))
            index.catalog = Catalog.read(meta, arrays)
            index.vectors = VectorStore.read(preset.index, meta, arrays, lambda: index.catalog.ids, mmap=mmap)
            index.created = float(meta.get("created", 0))
            n = len(index.catalog)
            for name, read in SIDECARS.items():
                if meta.get(name):
                    index.sidecars[name] = read(meta[name], arrays, n, index.dim)
            if meta.get("head_state"):
                import torch

                index.head_state = {k: torch.from_numpy(np.array(arrays[f"head/{k}"])) for k in meta["head_state"]}
        except IndexFileError:
            raise
        except Exception as exc:
            raise IndexFileError(path, f"inconsistent index content ({type(exc).__name__}: {exc})") from None
        from ..local import local_path
        from .safety import adopt_committed_local

        adopt_committed_local(local_path(path), str(meta.get("local_generation") or ""))
        if os.path.exists(local_path(path)):
            from ..local.store import LocalStore

            index.local = LocalStore.open(local_path(path), owner=repr(index.created))
        from .delta import replay
        from .safety import check_loaded

        index.generation = meta.get("generation")
        replay(index, os.fspath(path))  # the changes saved since as a delta log
        check_loaded(index, path)  # hook (issue 16): ids against next_id, local part against the global one
        return index
