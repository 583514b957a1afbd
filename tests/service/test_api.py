"""The HTTP API through the real app (FastAPI's TestClient)."""
import io
import os
import shutil
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imret.index.store import Index
from imret.presets import get_preset
from imret.service.app import ServiceConfig, create_app

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def setup(photoset, tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    photos = root / "photos"
    photos.mkdir()
    originals = [p for p in photoset.db if "distractor" not in p][:8]
    for p in originals:
        shutil.copy(p, photos)
    secret = root / "secret.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(secret)
    os.symlink(secret, photos / "link_outside.png")  # inside the folder, pointing outside it
    index, _ = Index.build([photos], get_preset("fast"))
    path = str(root / "svc.index")
    index.save(path)
    return root, photos, originals, path, index


@pytest.fixture
def client(setup, tmp_path):
    root, photos, originals, path, index = setup
    own = str(tmp_path / "own.index")
    shutil.copy(path, own)
    loaded = Index.load(own)
    loaded.set_extractor(index.extractor())  # share the loaded network across tests
    app = create_app(ServiceConfig(index_path=own, token=TOKEN, max_upload_bytes=2_000_000), index=loaded)
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def _upload(path):
    return {"file": (os.path.basename(path), open(path, "rb"), "image/jpeg")}


def test_health_info_and_page(client):
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/info").json()
    assert info["images"] == 9 and info["preset"] == "fast" and info["writable"] is True
    assert info["head_weights"] is None  # GeM: nothing learned, nothing stored
    page = client.get("/")
    assert page.status_code == 200 and "<title>imret" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


def test_search_by_upload_finds_the_original(client, photoset, setup):
    originals = setup[2]
    name = os.path.basename(originals[3])[:-4]
    q = next(q for q in photoset.queries if os.path.basename(q).startswith(name + "__crop"))
    body = client.post("/search", files=_upload(q), data={"top": 5}).json()
    assert body["results"][0]["name"] == name + ".png"
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4, 5]
    assert body["query"]["name"] == os.path.basename(q) and body["ms"] > 0


def test_search_by_id_and_with_box(client):
    r = client.post("/search", data={"id": 2, "top": 3}).json()
    assert r["results"][0]["id"] == 2 and r["results"][0]["score"] > 0.99
    w, h = r["query"]["width"], r["query"]["height"]
    boxed = client.post("/search", data={"id": 2, "top": 3, "bbox": f"0,0,{w // 2},{h // 2}"}).json()
    assert boxed["query"]["width"] == w // 2 and boxed["results"][0]["score"] < 0.99
    assert client.post("/search", data={"id": 2, "bbox": "9,9,1,1"}).status_code == 422
    assert client.post("/search", data={"id": 999}).status_code == 404
    assert client.post("/search", data={"top": 3}).status_code == 422


def test_min_score_marks_matches_and_names_no_good_match(client):
    r = client.post("/search", data={"id": 2, "top": 3}).json()
    assert r["min_score"] == 0.75 and r["no_match"] is None
    assert all(h["match"] == (h["cosine"] >= 0.75) and h["cosine"] == h["score"] for h in r["results"])
    strict = client.post("/search", data={"id": 2, "top": 3, "min_score": 1.0}).json()
    best = max(h["cosine"] for h in strict["results"])
    if best < 1.0:  # the photo itself scores 1 up to rounding
        assert strict["no_match"].startswith("no good match: the best cosine")
    assert [h["match"] for h in strict["results"][1:]] == [False, False]
    assert client.post("/search", data={"id": 2, "min_score": 1.5}).status_code == 422


def test_images_and_thumbnails(client, setup):
    first = client.post("/search", data={"id": 0, "top": 1}).json()["results"][0]
    raw = client.get(first["image"])
    assert raw.status_code == 200 and raw.content == open(first["path"], "rb").read()
    th = client.get(first["thumbnail"] + "?size=64")
    im = Image.open(io.BytesIO(th.content))
    assert th.headers["content-type"] == "image/jpeg" and max(im.size) == 64


def test_nothing_outside_the_indexed_roots_is_served(client, setup):
    idx = Index.load(setup[3])
    link_id = int(idx.ids[[os.path.basename(p) for p in idx.paths].index("link_outside.png")])
    assert client.get(f"/images/{link_id}").status_code == 404
    assert client.get(f"/thumbnails/{link_id}").status_code == 404
    for url in ("/images/../../etc/passwd", "/images/..%2F..%2Fetc%2Fpasswd", "/images/-1", "/images/abc",
                "/thumbnails/%2e%2e"):
        r = client.get(url)
        assert r.status_code in (404, 422), url
        assert b"root:" not in r.content


def test_bad_uploads_get_clear_json_errors(client, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    r = client.post("/search", files=_upload(text))
    assert r.status_code == 415 and "notes.jpg" in r.json()["detail"]
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2_100_000))
    r = client.post("/search", files=_upload(big))
    assert r.status_code == 413 and "upload limit" in r.json()["detail"]
    bomb = tmp_path / "bomb.png"
    Image.new("L", (8, 8)).save(bomb)
    import zlib

    data = bytearray(bomb.read_bytes())
    data[16:24] = (40000).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    bomb.write_bytes(bytes(data))
    r = client.post("/search", files=_upload(bomb))
    assert r.status_code == 413 and "pixels" in r.json()["detail"]


def test_writes_need_the_token(client, photoset):
    q = photoset.queries[0]
    assert client.post("/index/add", files={"files": ("a.jpg", open(q, "rb"))}).status_code == 401
    assert client.post("/index/add", files={"files": ("a.jpg", open(q, "rb"))},
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.delete("/index/0").status_code == 401
    assert client.get("/info").json()["images"] == 9


def test_add_and_delete_with_the_token(client, photoset, tmp_path):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    q = next(p for p in photoset.db if "distractor_005" in p)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8garbage")
    r = client.post("/index/add", headers=auth,
                    files=[("files", ("new face.jpg", open(q, "rb"))), ("files", ("junk.jpg", open(junk, "rb")))])
    body = r.json()
    assert r.status_code == 200 and body["images"] == 10
    assert [a["name"] for a in body["added"]][0].endswith("new_face.jpg")
    assert body["rejected"][0]["name"] == "junk.jpg"
    new_id = body["added"][0]["id"]
    found = client.post("/search", files=_upload(q), data={"top": 1}).json()["results"][0]
    assert found["id"] == new_id and client.get(found["image"]).status_code == 200
    assert client.delete(f"/index/{new_id}", headers=auth).json()["images"] == 9
    assert client.delete(f"/index/{new_id}", headers=auth).status_code == 404
    # the change was saved: a fresh load sees it
    assert len(Index.load(client.app.state.config.index_path)) == 9


def test_read_only_without_token(setup, tmp_path):
    own = str(tmp_path / "ro.index")
    shutil.copy(setup[3], own)
    loaded = Index.load(own)
    loaded.set_extractor(setup[4].extractor())
    with TestClient(create_app(ServiceConfig(index_path=own), index=loaded), base_url="http://localhost") as c:
        r = c.delete("/index/0", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403 and "read-only" in r.json()["detail"]


def test_searches_stay_correct_while_an_add_runs(client, photoset, setup):
    originals = setup[2]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    expected = {}
    for o in originals[:4]:
        name = os.path.basename(o)[:-4]
        expected[next(q for q in photoset.queries if os.path.basename(q).startswith(name + "__jpeg"))] = name + ".png"
    errors, answers = [], []

    def searcher():
        for q, want in list(expected.items()) * 2:
            r = client.post("/search", files=_upload(q), data={"top": 1})
            got = r.json()["results"][0]["name"] if r.status_code == 200 else r.text
            answers.append(got == want)
            if got != want:
                errors.append((q, got))

    adds = [p for p in photoset.db if "distractor" in p][10:16]
    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    r = client.post("/index/add", headers=auth, files=[("files", (os.path.basename(p), open(p, "rb"))) for p in adds])
    for t in threads:
        t.join()
    assert r.status_code == 200 and r.json()["images"] == 9 + len(adds)
    assert not errors and len(answers) == 16


def test_search_with_rerank_steps(client):
    assert "aqe" in client.get("/info").json()["rerank_steps"]
    plain = client.post("/search", data={"id": 1, "top": 5}).json()["results"]
    qe = client.post("/search", data={"id": 1, "top": 5, "rerank": "aqe:n=2"})
    assert qe.status_code == 200 and qe.json()["results"][0]["id"] == plain[0]["id"] == 1
    assert client.get("/info").json()["rerank"] == ""  # the preset bundles none
    none = client.post("/search", data={"id": 1, "top": 5, "rerank": "none"}).json()["results"]
    assert [h["id"] for h in none] == [h["id"] for h in plain]
    bad = client.post("/search", data={"id": 1, "rerank": "nope"})
    assert bad.status_code == 422 and "unknown re-ranking step" in bad.json()["detail"]


def test_the_cut_off_defaults_to_the_index_presets_own(setup, tmp_path):
    root, photos, originals, path, index = setup
    own = str(tmp_path / "strict.index")
    shutil.copy(path, own)
    loaded = Index.load(own)
    loaded.preset = loaded.preset.replace(min_score=0.999)  # as a preset calibrated so would carry it
    app = create_app(ServiceConfig(index_path=own, token=TOKEN, max_upload_bytes=2_000_000), index=loaded)
    with TestClient(app, base_url="http://localhost") as c:
        assert c.get("/info").json()["min_score"] == 0.999
        r = c.post("/search", data={"id": 2, "top": 3}).json()
        assert r["min_score"] == 0.999 and [h["match"] for h in r["results"][1:]] == [False, False]
        assert c.post("/search", data={"id": 2, "top": 3, "min_score": 0.0}).json()["min_score"] == 0.0
