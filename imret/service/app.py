"""The search service and its web page.

Readers search whatever ``Index`` the holder points at; a writer (add/delete)
works on a clone and swaps the reference when done, so searches never wait for
an extraction and never see a half-updated index. Every image served is looked
up by id in the index and must resolve (symlinks followed) inside the roots the
index was built from. Writes take the index's OS lock (``holder``); uploads live in
folders of their own (``uploads``); what a request must pass before its body is read,
and how much an image decode may take, is in ``limits``.
"""
from __future__ import annotations

import io
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources

import numpy as np
from fastapi import FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image

from ..core import __version__
from ..core.bbox import parse_bbox as core_parse_bbox
from ..core.errors import ImageLoadError, ImretError, IndexFileError
from ..index.indexer import apply_batch, extract_batch
from ..index.lock import DEFAULT_WAIT_S, LockBusy
from ..index.cutoff import check_min_score, hit_fields, no_match_message
from ..index.store import Index
from ..io.images import load_image
from .holder import IndexHolder
from .limits import FORM_OVERHEAD, LOOPBACK_HOSTS, DecodeGate, RequestGuard, token_problem
from .uploads import UploadBatch, uploads_dir as _uploads_dir


@dataclass(frozen=True)
class ServiceConfig:
    """``token``: required for writes (None: read-only service). Sizes in bytes/pixels.
    ``allowed_hosts``: the Host names served ('*': any; ``limits.allowed_hosts_for`` makes
    them from the bound address). ``max_decode_bytes``: memory one image decode may take;
    ``max_decodes``: decodes at once. ``lock_wait_s``: how long a write waits for another
    writer of the index (then 503)."""

    index_path: str
    token: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_top: int = 200
    thumbnail_px: int = 256
    device: str | None = None
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    max_files_per_add: int = 32
    max_decode_bytes: int = 384 * 1024 * 1024
    max_decodes: int = 2
    lock_wait_s: float = DEFAULT_WAIT_S


def _inside(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    for r in roots:
        rr = os.path.realpath(r)
        if real == rr or real.startswith(rr.rstrip(os.sep) + os.sep):
            return True
    return False


def create_app(config: ServiceConfig, index: Index | None = None) -> FastAPI:
    index = index if index is not None else Index.load(config.index_path)
    index.extractor(device=config.device)
    if index.local is not None:  # built now, not by the first requests at once
        index.local.extractor(device=config.device)
    holder = IndexHolder(index, config.index_path, config.lock_wait_s)
    gate = DecodeGate(config.max_decodes)
    thumbs: OrderedDict[tuple[int, int], bytes] = OrderedDict()
    thumbs_lock = threading.Lock()
    app = FastAPI(title="imret", version=__version__,
                  description="Instance-level image retrieval: search an index with a photo.")
    app.state.holder = holder
    app.state.config = config

    def body_cap(method: str, path: str) -> int:
        if method == "POST" and path == "/index/add":
            return config.max_files_per_add * config.max_upload_bytes + FORM_OVERHEAD
        if method == "POST" and path == "/search":
            return config.max_upload_bytes + FORM_OVERHEAD
        return FORM_OVERHEAD

    app.add_middleware(RequestGuard, token=config.token, allowed_hosts=config.allowed_hosts, body_cap=body_cap)

    @app.exception_handler(ImretError)
    async def _imret_error(request: Request, exc: ImretError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def require_token(authorization: str | None):
        problem = token_problem(config.token, authorization)
        if problem:
            raise HTTPException(*problem)

    def load(path: str, bbox=None) -> np.ndarray:
        with gate:
            return load_image(path, max_pixels=config.max_pixels, bbox=bbox, max_decode_bytes=config.max_decode_bytes)

    def write(change) -> Index:
        """``holder.update(change)``, its failures as HTTP errors: another writer holds the
        index too long → 503; the disk is full → 507 (the saved index is unchanged)."""
        try:
            return holder.update(change)
        except LockBusy as exc:
            raise HTTPException(503, str(exc)) from None
        except IndexFileError as exc:
            raise HTTPException(507 if "cannot write" in exc.reason else 500, str(exc)) from None

    async def read_upload(upload: UploadFile) -> bytes:
        data = await upload.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            raise HTTPException(413, f"{upload.filename}: larger than the upload limit of "
                                     f"{config.max_upload_bytes:,} bytes")
        if not data:
            raise HTTPException(400, f"{upload.filename}: empty upload")
        return data

    def decode(data: bytes, name: str, bbox=None) -> np.ndarray:
        with tempfile.NamedTemporaryFile(suffix=".img") as tmp:
            try:
                tmp.write(data)
                tmp.flush()
            except OSError as exc:
                raise HTTPException(507, f"{name}: cannot buffer the upload ({exc.strerror or exc})") from None
            try:
                return load(tmp.name, bbox)
            except ImageLoadError as exc:
                status = 413 if "pixels" in exc.reason or "decode limit" in exc.reason else 415
                raise HTTPException(status, f"{name}: {exc.reason}") from None

    def parse_bbox(text: str | None):
        if not text:
            return None
        try:
            return core_parse_bbox(text)
        except ImretError as exc:
            raise HTTPException(422, str(exc)) from None

    def hit_json(h, min_score: float):
        return {**hit_fields(h, min_score), "name": os.path.basename(h.path), "image": f"/images/{h.id}",
                "thumbnail": f"/thumbnails/{h.id}"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return resources.files("imret.service").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        allowed = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in allowed:
            raise HTTPException(404, "not found")
        body = resources.files("imret.service").joinpath(f"static/{name}").read_bytes()
        return Response(body, media_type=allowed[name])

    @app.get("/health")
    def health():
        return {"status": "ok", "images": len(holder.index)}

    @app.get("/info")
    def info():
        idx = holder.index
        i = idx.info()
        return {"images": i["images"], "dim": i["dim"], "backend": i["backend"], "preset": i["preset"]["name"],
                "description": i["preset"]["description"], "whitening": i["whitening"] is not None,
                "writable": config.token is not None, "version": __version__,
                "max_upload_bytes": config.max_upload_bytes, "rerank_steps": _rerank_names(idx),
                "min_score": idx.preset.min_score, "rerank": idx.preset.rerank, "head_weights": i["head_weights"],
                **({"reload_error": holder.reload_error} if holder.reload_error else {})}

    @app.post("/search")
    async def search(file: UploadFile | None = File(None), id: int | None = Form(None),
                     top: int = Form(10), bbox: str | None = Form(None), rerank: str | None = Form(None),
                     min_score: float | None = Form(None)):
        if not 1 <= top <= config.max_top:
            raise HTTPException(422, f"top must be between 1 and {config.max_top}")
        idx = holder.index  # one index for the whole request, even if a reload swaps it meanwhile
        try:
            min_score = check_min_score(idx.preset.min_score if min_score is None else min_score)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        box = parse_bbox(bbox)
        t0 = time.perf_counter()
        if file is not None and file.filename:
            img = await run_in_threadpool(decode, await read_upload(file), file.filename, box)
            name = file.filename
        elif id is not None:
            try:
                path = idx.path_of(id)
            except KeyError:
                raise HTTPException(404, f"no image with id {id} in the index") from None
            img = await run_in_threadpool(load, path, box)
            name = os.path.basename(path)
        else:
            raise HTTPException(422, "send an image file ('file') or the id of an indexed image ('id')")
        # CPU-bound work runs on worker threads (torch and faiss release the GIL): on the
        # event loop it would stall every other request, an add's extraction most of all
        hits = await run_in_threadpool(_search, idx, img, top, rerank)
        ms = (time.perf_counter() - t0) * 1000
        return {"query": {"name": name, "width": int(img.shape[1]), "height": int(img.shape[0]), "bbox": box},
                "ms": round(ms, 1), "images": len(idx), "min_score": min_score,
                "no_match": no_match_message(hits, min_score), "results": [hit_json(h, min_score) for h in hits]}

    def indexed_path(image_id: int) -> str:
        idx = holder.index
        try:
            path = idx.path_of(image_id)
        except KeyError:
            raise HTTPException(404, f"no image with id {image_id}") from None
        roots = idx.roots or sorted({os.path.dirname(p) for p in idx.paths})
        if not _inside(path, roots + [_uploads_dir(config.index_path)]) or not os.path.isfile(path):
            raise HTTPException(404, f"image {image_id} is not available")
        return path

    @app.get("/images/{image_id}")
    def image(image_id: int):
        path = indexed_path(image_id)
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/thumbnails/{image_id}")
    def thumbnail(image_id: int, size: int = 0):
        size = size or config.thumbnail_px
        if not 16 <= size <= 1024:
            raise HTTPException(422, "size must be between 16 and 1024")
        path = indexed_path(image_id)
        key = (image_id, size)
        with thumbs_lock:
            if key in thumbs:
                thumbs.move_to_end(key)
                return Response(thumbs[key], media_type="image/jpeg")
        arr = load(path)
        im = Image.fromarray(arr)
        im.thumbnail((size, size), Image.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        body = buf.getvalue()
        with thumbs_lock:
            thumbs[key] = body
            while len(thumbs) > 2048:
                thumbs.popitem(last=False)
        return Response(body, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/index/add")
    async def add(files: list[UploadFile] = File(...), authorization: str | None = Header(None)):
        require_token(authorization)
        if len(files) > config.max_files_per_add:
            raise HTTPException(413, f"{len(files)} files: at most {config.max_files_per_add} per request")
        batch = UploadBatch(_uploads_dir(config.index_path))
        try:
            return await _add(files, batch)
        except BaseException:
            batch.discard()  # this request's own folder: nothing another request owns
            raise

    async def _add(files, batch: UploadBatch):
        rejected = []
        for f in files:
            data = await read_upload(f)
            name = os.path.basename((f.filename or "upload").replace("\\", "/")) or "upload"
            try:
                await run_in_threadpool(decode, data, name)
            except HTTPException as exc:
                rejected.append({"name": name, "reason": exc.detail})
                continue
            try:
                batch.save(f.filename, data)
            except OSError as exc:
                raise HTTPException(507, f"cannot store the upload ({exc.strerror or exc}); nothing was added") \
                    from None
        if not batch.paths:
            raise HTTPException(415, {"message": "no image could be read", "rejected": rejected})
        # the slow part, outside the write lock; the index changes inside it
        extracted = await run_in_threadpool(extract_batch, holder.index, batch.paths)
        if not extracted.paths:
            raise HTTPException(415, {"message": "no image could be read", "rejected": rejected + [
                {"name": os.path.basename(p), "reason": r} for p, r in extracted.failures]})
        assigned: list[int] = []

        def change(idx: Index):
            # this request's ids, whoever else is writing
            assigned[:] = apply_batch(idx, extracted, roots=[batch.root]).tolist()

        new = await run_in_threadpool(write, change)
        added = [{"id": i, "name": os.path.basename(p)} for i, p in zip(assigned, extracted.paths)]
        return {"added": added, "rejected": rejected + [{"name": os.path.basename(p), "reason": r}
                                                        for p, r in extracted.failures], "images": len(new)}

    @app.delete("/index/{image_id}")
    def delete(image_id: int, authorization: str | None = Header(None)):
        require_token(authorization)
        removed = []

        def change(idx: Index):
            if image_id not in set(idx.ids.tolist()):  # as saved now, another writer's changes included
                raise HTTPException(404, f"no image with id {image_id}")
            removed.extend(idx.remove([image_id]))

        new = write(change)
        return {"removed": [{"id": image_id, "name": os.path.basename(p)} for p in removed],
                "images": len(new)}

    return app


def _rerank_names(idx: Index) -> list[str]:
    """The re-ranking steps this index can run (verification needs its local features)."""
    from ..rerank import STEPS

    return [n for n in STEPS.names() if idx.local is not None or n not in ("sv", "svh")]


def _search(idx: Index, img: np.ndarray, top: int, rerank: str | None):
    """Ranked hits for an H×W×3 image; with 'sv'/'svh' the hits carry inliers and matches.
    ``rerank``: the steps, 'none', or nothing for the preset's own."""
    from ..local import needs_local
    from ..rerank import FROM_PRESET

    try:
        pipeline = idx.resolve_rerank(rerank or FROM_PRESET)
        if needs_local(pipeline) and idx.local is None:
            raise HTTPException(422, "this index holds no local features for spatial verification: "
                                     "build it with 'imret index --local'")
        return idx.search_image(img, top=top, rerank=pipeline)
    except (ValueError, KeyError) as exc:
        raise HTTPException(422, str(exc)) from None
