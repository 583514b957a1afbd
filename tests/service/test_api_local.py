"""Spatial verification through the HTTP API: inliers and matches on each verified hit."""
import os
import shutil

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imret.index.store import Index
from imret.service.app import ServiceConfig, create_app

TOKEN = "local-token"


@pytest.fixture
def client(local_index, tmp_path):
    path, _, _ = local_index
    own = str(tmp_path / "own.index")
    shutil.copy(path, own)
    shutil.copy(path + ".local.h5", own + ".local.h5")
    app = create_app(ServiceConfig(index_path=own, token=TOKEN), index=Index.load(own))
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def _query(photoset, name):
    return next(q for q in photoset.queries if os.path.basename(q) == name)


def _search(client, query, **form):
    with open(query, "rb") as f:
        return client.post("/search", files={"file": (os.path.basename(query), f, "image/jpeg")}, data=form)


def test_sv_gives_inliers_and_matches_inside_both_images(client, photoset, local_index):
    assert {"sv", "svh"} <= set(client.get("/info").json()["rerank_steps"])
    query = _query(photoset, "coffee__occlude.jpg")
    r = _search(client, query, top=3, rerank="sv")
    assert r.status_code == 200, r.text
    body = r.json()
    top = body["results"][0]
    assert top["name"] == "coffee.png" and top["inliers"] >= 20
    assert len(top["matches"]) == top["inliers"] and all(len(m) == 4 for m in top["matches"])
    qw, qh = body["query"]["width"], body["query"]["height"]
    rw, rh = Image.open(os.path.join(local_index[1], "coffee.png")).size
    assert all(0 <= qx <= qw and 0 <= qy <= qh and 0 <= rx <= rw and 0 <= ry <= rh
               for qx, qy, rx, ry in top["matches"])
    assert all(h["inliers"] < top["inliers"] for h in body["results"][1:])
    # two named numbers: the cosine, and the inliers that verified it (the score ranks by both)
    assert top["verified"] and top["match"] and top["cosine"] <= 1.0
    assert abs(top["score"] - (top["cosine"] + 0.002 * top["inliers"])) < 1e-5
    assert all(h["verified"] == (h["inliers"] >= 12) for h in body["results"])
    plain = _search(client, query, top=3).json()["results"][0]
    assert "inliers" not in plain and "matches" not in plain


def test_added_photos_get_local_features(client, photoset, local_index):
    rocket = next(p for p in local_index[2] if os.path.basename(p).startswith("rocket."))
    with open(rocket, "rb") as f:
        r = client.post("/index/add", files=[("files", ("rocket.png", f, "image/png"))],
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    new_id = r.json()["added"][0]["id"]
    top = _search(client, _query(photoset, "rocket__crop.jpg"), top=2, rerank="sv").json()["results"][0]
    assert top["id"] == new_id and top["inliers"] >= 20


def test_sv_on_an_index_without_local_features_is_a_clear_error(tmp_path, photoset):
    from imret.presets import get_preset

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photoset.db[0], folder)
    index, _ = Index.build([folder], get_preset("fast"))
    index.save(tmp_path / "plain.index")
    with TestClient(create_app(ServiceConfig(index_path=str(tmp_path / "plain.index")), index=index), base_url="http://localhost") as c:
        assert "sv" not in c.get("/info").json()["rerank_steps"]
        r = _search(c, photoset.queries[0], rerank="sv")
        assert r.status_code == 422 and "imret index --local" in r.json()["detail"]
