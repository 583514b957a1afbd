"""The search service and its web page.

Readers search whatever ``Index`` the holder points at; a writer (add/delete)
works on a clone and swaps the reference when done, so searches never wait for
an extraction and never see a half-updated index. Every image served is looked
up by id in the index and must resolve (symlinks followed) inside the roots the
index was built from.
"""
from __future__ import annotations

import hmac
import io
import os
import shutil
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

from .. import __version__
from ..errors import ImageLoadError, ImretError
from ..index.cutoff import MIN_SCORE, check_min_score, hit_fields, no_match_message
from ..index.store import Index
from ..io.images import IMAGE_EXTENSIONS, load_image


@dataclass(frozen=True)
class ServiceConfig:
    """``token``: required for writes (None: read-only service). Sizes in bytes/pixels."""

    index_path: str
    token: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_top: int = 200
    thumbnail_px: int = 256
    device: str | None = None


class IndexHolder:
    def __init__(self, index: Index, path: str):
        self.index = index
        self.path = path
        self.write_lock = threading.Lock()

    def update(self, change) -> Index:
        """Apply ``change(clone)`` to a clone, save it, then swap it in."""
        with self.write_lock:
            new = self.index.clone()
            change(new)
            new.save(self.path)
            self.index = new
            return new


def _inside(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    for r in roots:
        rr = os.path.realpath(r)
        if real == rr or real.startswith(rr.rstrip(os.sep) + os.sep):
            return True
    return False


def _uploads_dir(index_path: str) -> str:
    return os.path.abspath(index_path) + ".uploads"


def create_app(config: ServiceConfig, index: Index | None = None) -> FastAPI:
    index = index if index is not None else Index.load(config.index_path)
    index.extractor(device=config.device)
    if index.local is not None:  # built now, not by the first requests at once
        index.local.extractor(device=config.device)
    holder = IndexHolder(index, config.index_path)
    thumbs: OrderedDict[tuple[int, int], bytes] = OrderedDict()
    thumbs_lock = threading.Lock()
    app = FastAPI(title="imret", version=__version__,
                  description="Instance-level image retrieval: search an index with a photo.")
    app.state.holder = holder
    app.state.config = config

    @app.exception_handler(ImretError)
    async def _imret_error(request: Request, exc: ImretError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def require_token(authorization: str | None):
        if config.token is None:
            raise HTTPException(403, "this service is read-only: start it with --token to allow changes")
        expected = f"Bearer {config.token}"
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected.encode()):
            raise HTTPException(401, "missing or wrong token (send 'Authorization: Bearer TOKEN')")

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
            tmp.write(data)
            tmp.flush()
            try:
                return load_image(tmp.name, max_pixels=config.max_pixels, bbox=bbox)
            except ImageLoadError as exc:
                status = 413 if "pixels" in exc.reason else 415
                raise HTTPException(status, f"{name}: {exc.reason}") from None

    def parse_bbox(text: str | None):
        if not text:
            return None
        try:
            vals = [float(v) for v in text.split(",")]
        except ValueError:
            vals = []
        if len(vals) != 4 or vals[2] <= vals[0] or vals[3] <= vals[1]:
            raise HTTPException(422, f"bbox must be x0,y0,x1,y1 with x1>x0 and y1>y0, got {text!r}")
        return tuple(vals)

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
                "min_score": MIN_SCORE}

    @app.post("/search")
    async def search(file: UploadFile | None = File(None), id: int | None = Form(None),
                     top: int = Form(10), bbox: str | None = Form(None), rerank: str | None = Form(None),
                     min_score: float = Form(MIN_SCORE)):
        if not 1 <= top <= config.max_top:
            raise HTTPException(422, f"top must be between 1 and {config.max_top}")
        try:
            min_score = check_min_score(min_score)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        box = parse_bbox(bbox)
        idx = holder.index
        t0 = time.perf_counter()
        if file is not None and file.filename:
            img = await run_in_threadpool(decode, await read_upload(file), file.filename, box)
            name = file.filename
        elif id is not None:
            try:
                path = idx.path_of(id)
            except KeyError:
                raise HTTPException(404, f"no image with id {id} in the index") from None
            img = await run_in_threadpool(load_image, path, max_pixels=config.max_pixels, bbox=box)
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
        arr = load_image(path, max_pixels=config.max_pixels)
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
        folder = os.path.join(_uploads_dir(config.index_path), time.strftime("%Y%m%d-%H%M%S") +
                              f"-{threading.get_ident() % 100000}")
        os.makedirs(folder, exist_ok=True)
        saved, rejected = [], []
        for f in files:
            data = await read_upload(f)
            base = os.path.basename((f.filename or "upload").replace("\\", "/")) or "upload"
            stem, ext = os.path.splitext(base)
            if ext.lower() not in IMAGE_EXTENSIONS:
                ext = ".jpg"
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80] or "upload"
            dest = os.path.join(folder, f"{len(saved) + len(rejected):04d}-{safe}{ext}")
            try:
                await run_in_threadpool(decode, data, base)
            except HTTPException as exc:
                rejected.append({"name": base, "reason": exc.detail})
                continue
            with open(dest, "wb") as out:
                out.write(data)
            saved.append(dest)
        if not saved:
            shutil.rmtree(folder, ignore_errors=True)
            raise HTTPException(415, {"message": "no image could be read", "rejected": rejected})
        extractor = holder.index.extractor()
        res = await run_in_threadpool(extractor.extract_paths, saved)  # the slow part, outside the write lock
        local = holder.index.local
        local_features = [] if local is None else await run_in_threadpool(
            lambda: [local.extractor().extract(p) for p in res.paths])
        ids_before = holder.index.next_id

        def change(idx: Index):
            idx.add_roots([folder])
            idx.add_descriptors(res.paths, res.descriptors)
            if local_features:
                idx.local.add_features(zip(idx.ids[-len(res.paths):].tolist(), local_features))

        new = await run_in_threadpool(holder.update, change)
        added = [{"id": int(i), "name": os.path.basename(p)} for i, p in zip(new.ids, new.paths) if i >= ids_before]
        return {"added": added, "rejected": rejected + [{"name": os.path.basename(p), "reason": r}
                                                        for p, r in res.failures], "images": len(new)}

    @app.delete("/index/{image_id}")
    def delete(image_id: int, authorization: str | None = Header(None)):
        require_token(authorization)
        if image_id not in set(holder.index.ids.tolist()):
            raise HTTPException(404, f"no image with id {image_id}")
        removed = []
        holder.update(lambda idx: removed.extend(idx.remove([image_id])))
        return {"removed": [{"id": image_id, "name": os.path.basename(p)} for p in removed],
                "images": len(holder.index)}

    return app


def _rerank_names(idx: Index) -> list[str]:
    """The re-ranking steps this index can run (verification needs its local features)."""
    from .. import local  # noqa: F401  (registers sv, svh)
    from ..rerank import STEPS

    return [n for n in STEPS.names() if idx.local is not None or n not in ("sv", "svh")]


def _search(idx: Index, img: np.ndarray, top: int, rerank: str | None):
    """Ranked hits for an H×W×3 image; with 'sv'/'svh' the hits carry inliers and matches."""
    from ..local import needs_local

    try:
        if needs_local(rerank or None) and idx.local is None:
            raise HTTPException(422, "this index holds no local features for spatial verification: "
                                     "build it with 'imret index --local'")
        return idx.search_image(img, top=top, rerank=rerank or None)
    except (ValueError, KeyError) as exc:
        raise HTTPException(422, str(exc)) from None
