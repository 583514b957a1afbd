"""The service under hostile or unlucky requests: other writers, racing uploads, huge or
unauthorised bodies, foreign Host headers, odd boxes and a full disk (issue 16)."""
import asyncio
import io
import os
import shutil
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imret.index import fileformat
from imret.index.lock import writer_lock
from imret.index.store import Index
from imret.presets import get_preset
from imret.service.app import ServiceConfig, create_app
from imret.service.limits import allowed_hosts_for

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def built(photoset, tmp_path_factory):
    root = tmp_path_factory.mktemp("svc-rel")
    photos = root / "photos"
    photos.mkdir()
    for p in [p for p in photoset.db if "distractor" not in p][:4]:
        shutil.copy(p, photos)
    index, _ = Index.build([photos], get_preset("fast"))
    path = str(root / "base.index")
    index.save(path)
    return path, index


def _client(built, tmp_path, **cfg):
    path, index = built
    own = str(tmp_path / "own.index")
    shutil.copy(path, own)
    loaded = Index.load(own)
    loaded.set_extractor(index.extractor())
    cfg = {"token": TOKEN, "max_upload_bytes": 2_000_000, **cfg}
    return TestClient(create_app(ServiceConfig(index_path=own, **cfg), index=loaded), base_url="http://localhost")


@pytest.fixture
def client(built, tmp_path):
    with _client(built, tmp_path) as c:
        yield c


def _photo(photoset, k):
    return [p for p in photoset.db if "distractor" in p][k]


def _files(*paths, name=None):
    return [("files", (name or os.path.basename(p), open(p, "rb").read(), "image/jpeg")) for p in paths]


# ----------------------------------------------------------------------------- other writers

def test_a_delete_after_another_process_saved_keeps_that_work(client, built):
    path = client.app.state.config.index_path
    other = Index.load(path)  # another writer (imret add/remove) changes the file under the service
    other.remove([int(other.ids[0])])
    with writer_lock(path):
        other.save(path)
    assert client.delete(f"/index/{int(other.ids[0])}", headers=AUTH).json()["images"] == 2
    saved = Index.load(path)
    assert len(saved) == 2 and sorted(saved.ids.tolist()) == [2, 3]
    assert client.app.state.holder.reloads == 1
    # what the other writer removed is not there to delete any more
    assert client.delete("/index/0", headers=AUTH).status_code == 404


def test_searches_see_what_another_process_saved(client):
    path = client.app.state.config.index_path
    assert client.get("/info").json()["images"] == 4
    other = Index.load(path)
    gone = int(other.ids[1])
    other.remove([gone])
    with writer_lock(path):
        other.save(path)
    assert client.get("/info").json()["images"] == 3  # read, not written: reloaded all the same
    assert client.app.state.holder.reloads == 1
    hits = client.post("/search", data={"id": int(other.ids[0]), "top": 10}).json()["results"]
    assert gone not in [h["id"] for h in hits] and len(hits) == 3
    assert client.app.state.holder.reloads == 1  # one reload per saved version


def test_an_unreadable_save_by_another_process_keeps_the_last_index_served(client):
    path = client.app.state.config.index_path
    good = open(path, "rb").read()
    with open(path, "r+b") as f:  # another program damaged it (a real writer renames whole files)
        f.seek(len(good) // 2)
        f.write(b"\x00" * 64)
    answer = client.get("/info").json()
    assert answer["images"] == 4 and "reload_error" in answer and os.path.basename(path) in answer["reload_error"]
    assert client.get("/health").json()["images"] == 4


def test_a_write_waits_for_the_lock_and_then_answers_503(built, tmp_path):
    with _client(built, tmp_path, lock_wait_s=0.3) as c:
        path = c.app.state.config.index_path
        before = open(path, "rb").read()
        with writer_lock(path):
            r = c.delete("/index/1", headers=AUTH)
        assert r.status_code == 503 and "another imret process" in r.json()["detail"]
        assert open(path, "rb").read() == before
        assert c.delete("/index/1", headers=AUTH).status_code == 200


# ----------------------------------------------------------------------------- uploads

def test_uploads_of_one_name_in_one_second_keep_their_own_photos(client, photoset, tmp_path):
    a, b = _photo(photoset, 0), _photo(photoset, 1)
    ra = client.post("/index/add", headers=AUTH, files=_files(a, name="same.jpg")).json()
    rb = client.post("/index/add", headers=AUTH, files=_files(b, name="same.jpg")).json()
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not a photo")
    rejected = client.post("/index/add", headers=AUTH, files=_files(junk))
    assert rejected.status_code == 415
    ida, idb = ra["added"][0]["id"], rb["added"][0]["id"]
    assert ida != idb
    assert client.get(f"/images/{ida}").content == open(a, "rb").read()
    assert client.get(f"/images/{idb}").content == open(b, "rb").read()  # the rejected upload deleted nothing
    assert client.get("/info").json()["images"] == 6


def test_concurrent_adds_are_each_answered_with_their_own_ids(client, photoset):
    photos = [_photo(photoset, k) for k in range(2, 8)]
    answers = {}

    def add(k):
        r = client.post("/index/add", headers=AUTH, files=_files(photos[k], name=f"p{k}.jpg"))
        answers[k] = r.json()["added"]

    threads = [threading.Thread(target=add, args=(k,)) for k in range(len(photos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [answers[k][0]["id"] for k in range(len(photos))]
    assert len(set(ids)) == len(photos)
    for k, i in enumerate(ids):
        assert answers[k][0]["name"].endswith(f"-p{k}.jpg")
        assert client.get(f"/images/{i}").content == open(photos[k], "rb").read()
    assert len(Index.load(client.app.state.config.index_path)) == 4 + len(photos)


# ----------------------------------------------------------------------------- before the body

def _asgi(app, method, path, headers, chunks):
    """Run one request through the ASGI app; (status, body chunks the app asked for)."""
    asked, sent = [], []

    async def receive():
        asked.append(1)
        k = len(asked) - 1
        return {"type": "http.request", "body": chunks[k] if k < len(chunks) else b"",
                "more_body": k + 1 < len(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "scheme": "http",
             "server": ("localhost", 80), "client": ("127.0.0.1", 5), "http_version": "1.1", "root_path": ""}
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), len(asked)


def test_no_token_is_refused_before_a_byte_of_the_body_is_read(client):
    form = {"host": "localhost", "content-type": "multipart/form-data; boundary=xx"}
    status, asked = _asgi(client.app, "POST", "/index/add", {**form, "content-length": str(10**9)}, [b"x" * 1000])
    assert (status, asked) == (401, 0)
    status, asked = _asgi(client.app, "POST", "/search", {**form, "content-length": str(10**9)}, [b"x" * 1000])
    assert (status, asked) == (413, 0)  # over the cap by its Content-Length: not read at all


def test_a_chunked_body_stops_being_read_at_the_cap(client):
    cap = 2_000_000 + 64 * 1024
    chunk = b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n" + b"x" * 65536
    headers = {"host": "localhost", "content-type": "multipart/form-data; boundary=xx"}
    status, asked = _asgi(client.app, "POST", "/search", headers, [chunk] * 200)  # 13 MB, no Content-Length
    assert status == 413
    assert asked == cap // len(chunk) + 1  # the chunk that crossed the cap is the last one read


def test_only_the_hosts_it_was_bound_for_are_answered(client):
    assert client.get("/health", headers={"host": "localhost:8000"}).status_code == 200
    assert client.get("/health", headers={"host": "127.0.0.1:8000"}).status_code == 200
    r = client.get("/health", headers={"host": "rebind.attacker.example:8000"})
    assert r.status_code == 400 and "rebind.attacker.example" in r.json()["detail"]
    assert allowed_hosts_for("127.0.0.1") == ("localhost", "127.0.0.1", "[::1]")
    assert allowed_hosts_for("192.168.1.5", ["photos.lan"]) == ("localhost", "127.0.0.1", "[::1]", "192.168.1.5",
                                                                "photos.lan")
    assert allowed_hosts_for("::1") == ("localhost", "127.0.0.1", "[::1]")
    assert allowed_hosts_for("0.0.0.0") == ("*",)


# ----------------------------------------------------------------------------- decoding and boxes

@pytest.mark.parametrize("box", ["nan,nan,nan,nan", "0,0,inf,inf", "0,0,1e309,1e309", "-inf,0,5,5"])
def test_non_finite_boxes_are_422(client, box):
    r = client.post("/search", data={"id": 1, "bbox": box})
    assert r.status_code == 422 and "finite" in r.json()["detail"]


def test_a_16_bit_png_over_the_decode_budget_is_413(built, tmp_path):
    png = tmp_path / "deep.png"
    Image.fromarray(np.zeros((600, 500), np.uint16)).save(png)  # small file, 300,000 pixels
    # I;16 costs 2 + 15 bytes per pixel: 5.1 MB here; the budget is 4 MB
    with _client(built, tmp_path, max_decode_bytes=4_000_000) as c:
        r = c.post("/search", files={"file": ("deep.png", open(png, "rb").read(), "image/png")})
        assert r.status_code == 413 and "decode limit" in r.json()["detail"]


# ----------------------------------------------------------------------------- full disk

def test_a_full_disk_during_an_add_is_507_and_leaves_nothing_behind(client, photoset, monkeypatch):
    path = client.app.state.config.index_path
    before = open(path, "rb").read()

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileformat.os, "fsync", no_space)
    r = client.post("/index/add", headers=AUTH, files=_files(_photo(photoset, 9)))
    monkeypatch.undo()
    assert r.status_code == 507 and "No space left on device" in r.json()["detail"] and path in r.json()["detail"]
    assert open(path, "rb").read() == before
    uploads = path + ".uploads"
    assert not os.path.exists(uploads) or os.listdir(uploads) == []
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".tmp")]
    assert client.get("/info").json()["images"] == 4  # the service still serves the old index
