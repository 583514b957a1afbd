"""Local features of a database, per image id: reduction, quantisation, HDF5 file.

``LocalCodec`` is learned on the database: descriptors (L2-normalised at the
backbone's width) are reduced by PCA to ``pca_dim`` and L2-normalised again (DELF),
then stored as product-quantisation codes (faiss, ``pq_m`` bytes each, as the DELF
paper compresses them), or as float16/float32. Queries are reduced but never
quantised (asymmetric matching).

``LocalStore`` holds, per image id: keypoints, pyramid scales, attention scores,
descriptor codes and the image size. Its file (``INDEX.local.h5`` beside an index)
is HDF5: ``config`` (JSON attribute), ``attention/*`` (the attention network that
made the features), ``codec/*`` and ``features/<id>``, one compound dataset per
image with fields x, y, scale (index into the pyramid), score, code. An opened file
is read image by image, on demand; saving writes a new file and renames it.
Every image's dataset carries the SHA-256 of its rows and size (``sha256``), and the
file the SHA-256 of its configuration, codec and attention (``meta_sha256``): a changed
keypoint would move results silently, so it is refused by name instead. Files written
before these digests existed are read unchecked.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
import torch

from ..descriptor.whitening import PCAWhitening, l2_normalize
from ..errors import ImageLoadError, IndexFileError
from .config import LocalConfig
from .extract import LocalExtractor, LocalFeatures

FORMAT = "imret-local/1"
MIN_PQ_TRAINING = 256  # faiss needs at least one point per centroid (8-bit codes: 256)


@dataclass(frozen=True)
class LocalCodec:
    """PCA (``pca``: power 0, a plain rotation and truncation) then storage as ``kind``:
    'pq' with ``centroids`` (m×256×d/m), 'float16' or 'float32'."""

    pca: PCAWhitening
    kind: str
    centroids: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self.pca.out_dim

    @classmethod
    def fit(cls, descriptors: np.ndarray, cfg: LocalConfig, pca_samples: int = 100_000, pq_samples: int = 10_000,
            seed: int = 0) -> "LocalCodec":
        """Learn from N×C unit rows: the PCA from a random sample of at most ``pca_samples``,
        the PQ codebooks (k-means, 10 iterations) from one of ``pq_samples`` (39 per
        centroid, faiss's advice). PQ needs at least 256 descriptors; with fewer the codec
        stores float16."""
        x = np.asarray(descriptors, np.float32)
        rng = np.random.default_rng(seed)
        if len(x) > pca_samples:
            x = x[rng.choice(len(x), pca_samples, replace=False)]
        if len(x) < 2:
            raise ValueError(f"learning the local-descriptor PCA needs at least 2 descriptors, got {len(x)}")
        pca = PCAWhitening.fit(x, dim=cfg.pca_dim, power=0.0)
        if cfg.storage != "pq" or len(x) < MIN_PQ_TRAINING or pca.out_dim % cfg.pq_m:
            return cls(pca, "float16" if cfg.storage == "pq" else cfg.storage)
        if len(x) > pq_samples:
            x = x[rng.choice(len(x), pq_samples, replace=False)]
        pq = _pq(pca.out_dim, cfg.pq_m)
        pq.cp.niter = 10
        pq.train(np.ascontiguousarray(pca.apply(x)))
        import faiss

        cen = faiss.vector_to_array(pq.centroids).reshape(cfg.pq_m, pq.ksub, pq.dsub)
        return cls(pca, "pq", cen.astype(np.float32))

    def reduce(self, descriptors: np.ndarray) -> np.ndarray:
        """N×C unit rows → N×d unit rows (L2 → PCA → L2)."""
        if len(descriptors) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.pca.apply(l2_normalize(descriptors))

    def encode(self, reduced: np.ndarray) -> np.ndarray:
        if self.kind == "pq":
            return self._pq().compute_codes(np.ascontiguousarray(reduced, np.float32)) if len(reduced) else \
                np.zeros((0, self.code_shape[0]), np.uint8)
        return np.asarray(reduced, self.kind)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        if self.kind == "pq":
            if not len(codes):
                return np.zeros((0, self.dim), np.float32)
            return l2_normalize(self._pq().decode(np.ascontiguousarray(codes, np.uint8)))
        return np.asarray(codes, np.float32)

    @property
    def code_shape(self) -> tuple[int]:
        return (self.centroids.shape[0],) if self.kind == "pq" else (self.dim,)

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.kind == "pq" else self.kind)

    def _pq(self):
        pq = getattr(self, "_pq_cache", None)
        if pq is None:
            import faiss

            m = self.centroids.shape[0]
            pq = _pq(self.dim, m)
            faiss.copy_array_to_vector(np.ascontiguousarray(self.centroids, np.float32).ravel(), pq.centroids)
            object.__setattr__(self, "_pq_cache", pq)
        return pq

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"pca_mean": self.pca.mean, "pca_projection": self.pca.projection}
        if self.centroids is not None:
            out["pq_centroids"] = self.centroids
        return out

    @classmethod
    def from_arrays(cls, kind: str, arrays) -> "LocalCodec":
        pca = PCAWhitening(np.asarray(arrays["pca_mean"], np.float32), np.asarray(arrays["pca_projection"], np.float32), 0.0)
        cen = np.asarray(arrays["pq_centroids"], np.float32) if kind == "pq" else None
        return cls(pca, kind, cen)


def _pq(dim: int, m: int):
    import faiss

    pq = faiss.ProductQuantizer(dim, m, 8)
    pq.cp.min_points_per_centroid = 1  # small databases: no "please provide more points" warnings
    return pq


def row_dtype(codec: LocalCodec) -> np.dtype:
    """The structured layout of one stored feature with ``codec``'s codes."""
    return np.dtype([("x", "<f4"), ("y", "<f4"), ("scale", "u1"), ("score", "<f2"),
                     ("code", codec.code_dtype, codec.code_shape)])


def _record_digest(rows: np.ndarray, size) -> str:
    h = hashlib.sha256(np.ascontiguousarray(rows).tobytes())
    h.update(np.asarray(size, "<i8").tobytes())
    return h.hexdigest()


def _meta_digest(config_json: str, codec_kind: str, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(config_json.encode() + b"\0" + codec_kind.encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode() + b"\0" + a.dtype.str.encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()


class Stored(NamedTuple):
    """One image's stored rows (a structured array, fields x, y, scale, score, code) and
    its (height, width)."""

    rows: np.ndarray
    size: tuple[int, int]


class LocalStore:
    """Local features per image id (see the module docstring).

    >>> store = LocalStore.build(paths, ids, LocalExtractor())
    >>> store.features(ids[0])      # LocalFeatures, descriptors decoded to pca_dim
    """

    def __init__(self, config: LocalConfig, attention_state: dict[str, torch.Tensor], codec: LocalCodec | None = None):
        self.config = config
        self.attention_state = attention_state
        self.codec = codec
        self._rows: dict[int, Stored] = {}  # images held in memory
        self._file: str | None = None  # images not in _rows are read from here on demand
        self._in_file: set[int] = set()
        self._extractor: LocalExtractor | None = None

    # -- building -----------------------------------------------------------
    @classmethod
    def build(cls, paths: Sequence[str], ids: Sequence[int], extractor: LocalExtractor, progress: bool = False,
              on_error: Callable[[str, str], None] | None = None, journal_path: str | None = None,
              journal_header: dict | None = None) -> "LocalStore":
        """Extract the local features of ``paths`` (stored under ``ids``). The codec is
        learned on the first ``config.pca_images`` images, then features are encoded
        as they come. A file that fails is reported through ``on_error`` and left out.
        ``journal_path``: resumable, as ``add``."""
        store = cls(extractor.config, extractor.attention_state())
        store._extractor = extractor
        store.add(paths, ids, progress=progress, on_error=on_error, journal_path=journal_path,
                  journal_header=journal_header)
        return store

    def extractor(self, device=None) -> LocalExtractor:
        """The extractor that made these features (built once, on first use)."""
        if self._extractor is None:
            self._extractor = LocalExtractor(self.config, self.attention_state, device=device)
        return self._extractor

    def add(self, paths: Sequence[str], ids: Sequence[int], progress: bool = False,
            on_error: Callable[[str, str], None] | None = None, journal_path: str | None = None,
            journal_header: dict | None = None) -> list[int]:
        """Extract and store the features of more images; returns the ids stored.

        With ``journal_path`` every image's features are journaled as they are extracted,
        and the features a killed run journaled are taken from there instead of being
        extracted again (``journal_header``: what else must match, e.g. the index's
        creation time). The caller deletes the journal once the store is saved."""
        from ..index.journal import state_digest
        from .journal import CODEC_KEY, LocalJournal

        journal, resumed = None, {}
        if journal_path:
            header = {"local": self.config.to_dict(), "attention": state_digest(self.attention_state),
                      **(journal_header or {})}
            journal = LocalJournal(journal_path, header, codec=self.codec)
            resumed = dict(zip(*journal.records()))
            codec = resumed.pop(CODEC_KEY, None)
            if codec is not None and self.codec is None:  # learned by the killed run: its stored rows use it
                self.codec = codec
            journal.open()
        try:
            return self._add(paths, ids, progress, on_error, journal, resumed)
        finally:
            if journal:
                journal.close()

    def _add(self, paths, ids, progress, on_error, journal, resumed) -> list[int]:
        ex = self.extractor() if any(p not in resumed for p in paths) else None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(paths), unit="img", desc="local features", dynamic_ncols=True)
        pending: list[tuple[int, LocalFeatures]] = []
        done = []
        for p, i in zip(paths, ids):
            f = resumed.get(p)
            try:
                if f is None:
                    f = ex.extract(p)
                    if self.codec is not None:
                        f = self._encode(f)  # journaled, and kept, in the compact form
                    if journal:
                        journal.append(p, f)
            except ImageLoadError as exc:
                if on_error:
                    on_error(p, exc.reason)
                continue
            finally:
                if bar:
                    bar.update(1)
            done.append(int(i))
            if isinstance(f, Stored):
                self._rows[int(i)] = f
            elif self.codec is None:
                pending.append((int(i), f))
                if len(pending) >= self.config.pca_images:
                    self._learn_codec(pending, journal)
                    pending = []
            else:
                self.put(int(i), f)
        if pending:
            self._learn_codec(pending, journal)
        if bar:
            bar.close()
        return done

    def add_features(self, items: Iterable[tuple[int, LocalFeatures]]) -> None:
        """Store features already extracted (descriptors at the backbone's width); the
        codec is learned on them first when there is none yet."""
        items = list(items)
        if self.codec is None:
            self._learn_codec(items)
        else:
            for i, f in items:
                self.put(i, f)

    def _learn_codec(self, items: list[tuple[int, LocalFeatures]], journal=None) -> None:
        if self.codec is None:
            self.codec = LocalCodec.fit(np.concatenate([f.descriptors for _, f in items]), self.config)
            if journal is not None:  # before any row encoded with it
                from .journal import CODEC_KEY

                journal.append(CODEC_KEY, self.codec)
        for i, f in items:
            self.put(i, f)

    def put(self, image_id: int, f: LocalFeatures) -> None:
        """Store one image's features (raw descriptors: reduced and encoded here)."""
        self._rows[int(image_id)] = self._encode(f)

    def _encode(self, f: LocalFeatures) -> Stored:
        rows = np.zeros(len(f), row_dtype(self.codec))
        rows["x"], rows["y"] = f.xy[:, 0], f.xy[:, 1]
        scales = np.asarray(self.config.scales, np.float32)
        rows["scale"] = np.abs(f.scales[:, None] - scales[None]).argmin(1) if len(f) else 0
        rows["score"] = np.minimum(f.scores, np.finfo(np.float16).max)
        rows["code"] = self.codec.encode(self.codec.reduce(f.descriptors))
        return Stored(rows, (int(f.size[0]), int(f.size[1])))

    def remove(self, ids: Iterable[int]) -> None:
        for i in ids:
            self._rows.pop(int(i), None)
            self._in_file.discard(int(i))

    # -- reading ------------------------------------------------------------
    @property
    def ids(self) -> list[int]:
        return sorted(set(self._rows) | self._in_file)

    def __len__(self) -> int:
        return len(set(self._rows) | self._in_file)

    def __contains__(self, image_id: int) -> bool:
        return int(image_id) in self._rows or int(image_id) in self._in_file

    def rows(self, ids: Sequence[int]) -> dict[int, Stored]:
        """Stored rows of ``ids`` (those it holds), reading the file once for all of them."""
        out = {int(i): self._rows[int(i)] for i in ids if int(i) in self._rows}
        todo = [int(i) for i in ids if int(i) not in out and int(i) in self._in_file]
        if todo:
            import h5py

            try:
                with h5py.File(self._file, "r") as h:
                    for i in todo:
                        out[i] = self._checked(h["features"][str(i)], i)
            except IndexFileError:
                raise
            except Exception as exc:  # h5py: OSError, KeyError, ValueError … for damaged files
                raise IndexFileError(self._file, f"unreadable local features ({type(exc).__name__}: {exc})") from None
        return out

    def _checked(self, ds, image_id: int) -> Stored:
        """One image's dataset, refused (naming the file and the image) unless it is what was saved."""
        rows = ds[()]
        size = tuple(int(v) for v in ds.attrs["size"])
        want = ds.attrs.get("sha256")
        if want is not None and _record_digest(rows, size) != str(want):
            raise IndexFileError(self._file, f"checksum mismatch in the local features of image {image_id}: "
                                             "the file is damaged (rebuild it with 'imret index --local')")
        if rows.dtype != row_dtype(self.codec) or len(size) != 2 or min(size) < 1 or (
                len(rows) and int(rows["scale"].max()) >= len(self.config.scales)):
            raise IndexFileError(self._file, f"damaged local features of image {image_id} (layout, size or "
                                             "scale index out of range)")
        return Stored(rows, size)

    def features_of(self, stored: Stored) -> LocalFeatures:
        rows = stored.rows
        xy = np.stack([rows["x"], rows["y"]], 1).astype(np.float32)
        scales = np.asarray(self.config.scales, np.float32)[rows["scale"]]
        return LocalFeatures(xy, scales, rows["score"].astype(np.float32), self.codec.decode(rows["code"]), stored.size)

    def features(self, image_id: int) -> LocalFeatures:
        got = self.rows([image_id])
        if int(image_id) not in got:
            raise KeyError(f"no local features for image id {image_id}")
        return self.features_of(got[int(image_id)])

    def many(self, ids: Sequence[int]) -> dict[int, LocalFeatures]:
        return {i: self.features_of(r) for i, r in self.rows(ids).items()}

    def query(self, image, bbox=None, device=None) -> LocalFeatures:
        """The features of a query image, reduced like the database's (not quantised)."""
        f = self.extractor(device).extract(image, bbox=bbox)
        return self.reduce(f)

    def reduce(self, f: LocalFeatures) -> LocalFeatures:
        return f.replace_descriptors(self.codec.reduce(f.descriptors))

    def bytes_per_image(self) -> dict[str, float]:
        """Mean bytes per image: 'stored' (the rows as saved: keypoint, scale index, score,
        code) and 'raw' (float32 keypoints, scales, scores and pca_dim descriptors)."""
        counts = [len(s.rows) for s in self.rows(self.ids).values()]
        n = float(np.mean(counts)) if counts else 0.0
        return {"features": n, "stored": n * row_dtype(self.codec).itemsize,
                "raw": n * (4 * 2 + 4 + 4 + 4 * self.codec.dim)}

    def info(self) -> dict:
        """What the store holds and how it was made (cheap: reads no features)."""
        c = self.config
        return {"images": len(self), "backbone": c.backbone.name, "stage": c.backbone.stage,
                "scales": list(c.scales), "max_size": c.max_size, "max_features": c.max_features,
                "dim": None if self.codec is None else self.codec.dim,
                "storage": None if self.codec is None else self.codec.kind,
                "code_bytes": None if self.codec is None else int(row_dtype(self.codec).fields["code"][0].itemsize)}

    def copy(self) -> "LocalStore":
        other = LocalStore(self.config, self.attention_state, self.codec)
        other._rows, other._file, other._in_file = dict(self._rows), self._file, set(self._in_file)
        other._extractor = self._extractor
        return other

    # -- files --------------------------------------------------------------
    def save(self, path: str | os.PathLike, owner: str = "") -> None:
        """Write every image's features to ``path`` (a new file, renamed into place).
        ``owner``: what the features belong to (an index's creation time), checked by ``open``."""
        import h5py

        path = os.fspath(path)
        if self.codec is None:
            raise ValueError("an empty local-feature store has nothing to save")
        from ..index.fileformat import new_file_mode
        from ..index.lock import temp_prefix

        rows = self.rows(self.ids)
        mode = new_file_mode(path)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
            os.close(fd)
            with h5py.File(tmp, "w") as h:
                config_json = json.dumps(self.config.to_dict())
                attention = {f"attention/{k}": v.detach().cpu().numpy() for k, v in self.attention_state.items()}
                codec = {f"codec/{k}": v for k, v in self.codec.arrays().items()}
                h.attrs["format"] = FORMAT
                h.attrs["owner"] = owner
                h.attrs["config"] = config_json
                h.attrs["codec"] = self.codec.kind
                h.attrs["meta_sha256"] = _meta_digest(config_json, self.codec.kind, {**attention, **codec})
                for k, v in {**attention, **codec}.items():
                    h.create_dataset(k, data=v)
                g = h.create_group("features")
                for i, st in rows.items():
                    ds = g.create_dataset(str(i), data=st.rows)
                    ds.attrs["size"] = np.asarray(st.size, np.int64)
                    ds.attrs["sha256"] = _record_digest(st.rows, st.size)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException as exc:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(exc, (OSError, RuntimeError)):  # h5py reports a full disk as either
                raise IndexFileError(path, f"cannot write ({getattr(exc, 'strerror', None) or exc}); the file "
                                           "there before is unchanged") from None
            raise
        self._rows, self._file, self._in_file = {}, path, set(rows)

    @classmethod
    def open(cls, path: str | os.PathLike, owner: str | None = None) -> "LocalStore":
        """The store saved at ``path``; image features are read when asked for. ``owner``:
        what it must belong to (as ``save`` was told); another owner is an error."""
        import h5py

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise IndexFileError(path, "no such local-feature file")
        try:
            with h5py.File(path, "r") as h:
                if h.attrs.get("format") != FORMAT:
                    raise IndexFileError(path, f"not an imret local-feature file (format {h.attrs.get('format')!r})")
                if owner is not None and h.attrs.get("owner") != owner:
                    raise IndexFileError(path, "holds the local features of another index: delete it, or "
                                               "build the index again with --local")
                att_arrays = {k: np.array(v[()]) for k, v in h["attention"].items()}
                codec_arrays = {k: v[()] for k, v in h["codec"].items()}
                want = h.attrs.get("meta_sha256")
                if want is not None and _meta_digest(str(h.attrs["config"]), str(h.attrs["codec"]), {
                        **{f"attention/{k}": v for k, v in att_arrays.items()},
                        **{f"codec/{k}": v for k, v in codec_arrays.items()}}) != str(want):
                    raise IndexFileError(path, "checksum mismatch in the local-feature configuration, codec or "
                                               "attention: the file is damaged")
                cfg = LocalConfig.from_dict(json.loads(h.attrs["config"]))
                att = {k: torch.from_numpy(v) for k, v in att_arrays.items()}
                codec = LocalCodec.from_arrays(str(h.attrs["codec"]), codec_arrays)
                ids = {int(k) for k in h["features"].keys()}
        except IndexFileError:
            raise
        except Exception as exc:  # h5py raises OSError, KeyError, ValueError … for damaged files
            raise IndexFileError(path, f"unreadable local-feature file ({type(exc).__name__}: {exc})") from None
        store = cls(cfg, att, codec)
        store._file, store._in_file = path, ids
        return store

