"""The Milvus backend against Milvus Lite and a real Milvus server on 127.0.0.1.

The server comes from the PyPI package ``milvus`` (a standalone build); the fixture
starts it on a free port and stops it afterwards.
"""
import os
import socket

import numpy as np
import pytest

from imret.config import IndexConfig, Preset, WhiteningConfig
from imret.index.store import Index

from imret_cli import run_imret

pytest.importorskip("pymilvus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    server_mod = pytest.importorskip("milvus") if not os.environ.get("CI") else __import__("milvus")
    srv = server_mod.MilvusServer()
    srv.set_base_dir(str(tmp_path_factory.mktemp("milvus")))
    srv.listen_port = _free_port()
    srv.start()
    try:
        yield f"http://127.0.0.1:{srv.listen_port}"
    finally:
        srv.stop()


def _index(uri, collection="t"):
    cfg = IndexConfig(kind="milvus", milvus_uri=uri, milvus_collection=collection)
    return Index(Preset(index=cfg, whitening=WhiteningConfig(kind="none")), 16)


def _flat():
    return Index(Preset(index=IndexConfig(kind="flat"), whitening=WhiteningConfig(kind="none")), 16)


def _check_backend(uri, tmp_path, collection):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    paths = [f"/p/{i}.jpg" for i in range(300)]
    m, f = _index(uri, collection), _flat()
    m.add_descriptors(paths[:200], x[:200])
    m.add_descriptors(paths[200:], x[200:])
    f.add_descriptors(paths, x)
    q = x[::30] + 0.01
    names = lambda idx: [[h.path for h in r] for r in idx.search(q, top=5)]  # noqa: E731
    assert names(m) == names(f)
    m.remove(paths[:30])
    f.remove(paths[:30])
    assert names(m) == names(f) and m.backend.ntotal == 270
    m.save(tmp_path / "m.index")
    again = Index.load(tmp_path / "m.index")
    assert again.backend.name == "milvus" and again.backend.ntotal == 270
    assert names(again) == names(f)


def test_milvus_lite(tmp_path):
    _check_backend(str(tmp_path / "vectors.db"), tmp_path, "lite")


def test_milvus_server(milvus_server, tmp_path):
    _check_backend(milvus_server, tmp_path, "server")


def test_cli_with_milvus_lite(tmp_path, photoset, copy_photos):
    photos = copy_photos(photoset.db[:6], tmp_path / "photos")
    out = tmp_path / "m.index"
    r = run_imret("index", photos, "--out", out, "--preset", "fast", "--milvus-uri", tmp_path / "v.db", "-q")
    assert r.returncode == 0, r.stderr
    r = run_imret("search", out, photoset.db[3], "--top", "2", "--json")
    assert r.returncode == 0, r.stderr
    import json

    assert os.path.basename(json.loads(r.stdout)["results"][0]["path"]) == os.path.basename(photoset.db[3])
    assert "milvus" in run_imret("info", out).stdout
