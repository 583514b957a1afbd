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
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..core.atomic import atomic_write, temp_prefix
from ..core.errors import ImageLoadError, IndexFileError
from .codec import LocalCodec, Stored, row_dtype
from .config import LocalConfig
from .extract import LocalExtractor, LocalFeatures

FORMAT = "imret-local/1"


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
        from ..core.digest import state_digest
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

    def put_stored(self, items: dict[int, Stored]) -> None:
        """Hold features already in stored form (``rows`` of an image id), e.g. replayed."""
        if items and self.codec is None:
            raise ValueError("stored local features need the store's codec")
        for i, st in items.items():
            if st.rows.dtype != row_dtype(self.codec):
                raise ValueError(f"local features of image {i} have another layout")
            self._rows[int(i)] = st

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
    def save(self, path: str | os.PathLike, owner: str = "", generation: str = "") -> None:
        """Write every image's features to ``path`` (a new file, renamed into place).
        ``owner``: what the features belong to (an index's creation time), checked by ``open``;
        ``generation``: which save of that index this file is (``file_generation`` reads it)."""
        import h5py

        path = os.fspath(path)
        if self.codec is None:
            raise ValueError("an empty local-feature store has nothing to save")

        rows = self.rows(self.ids)

        def write(tmp: str) -> None:
            with h5py.File(tmp, "w") as h:
                config_json = json.dumps(self.config.to_dict())
                attention = {f"attention/{k}": v.detach().cpu().numpy() for k, v in self.attention_state.items()}
                codec = {f"codec/{k}": v for k, v in self.codec.arrays().items()}
                h.attrs["format"] = FORMAT
                h.attrs["owner"] = owner
                h.attrs["generation"] = generation
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

        try:
            atomic_write(path, write, prefix=temp_prefix(path))
        except (OSError, RuntimeError) as exc:  # h5py reports a full disk as either
            raise IndexFileError(path, f"cannot write ({getattr(exc, 'strerror', None) or exc}); the file "
                                       "there before is unchanged") from None
        self._rows, self._file, self._in_file = {}, path, set(rows)

    def moved_to(self, path: str | os.PathLike) -> None:
        """The file this store reads its features from was renamed to ``path``."""
        self._file = os.fspath(path)

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


def file_generation(path: str | os.PathLike) -> str | None:
    """The ``generation`` a local-feature file was saved with ("" before generations were
    recorded); None when there is no readable file at ``path``."""
    import h5py

    try:
        with h5py.File(os.fspath(path), "r") as h:
            return str(h.attrs.get("generation", ""))
    except (OSError, KeyError, ValueError):
        return None
