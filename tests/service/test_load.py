"""Many concurrent searches against a real ``imret serve`` process while images are added:
every answer is right and nothing is lost. Loopback only; bounded in count and time."""
import os
import subprocess
import sys

import httpx
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
from bench_service import photo_setup, run_load, start_server  # noqa: E402

TOKEN = "load-test-token"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("load"))
    photos, queries, extra = photo_setup(root, n_db=20)
    index = os.path.join(root, "svc.index")
    subprocess.run([sys.executable, "-m", "imret", "index", photos, "--out", index, "--preset", "fast", "-q"],
                   check=True, capture_output=True, timeout=600)
    proc, url = start_server(index, TOKEN)
    yield url, queries, extra[:8], index
    proc.terminate()
    proc.wait(20)


def test_concurrent_searches_during_an_add_are_all_correct(served):
    url, queries, extra, index = served
    before = httpx.get(url + "/info").json()["images"]
    r = run_load(url, queries, clients=3, requests=8, token=TOKEN, add_files=extra, deadline_s=240)
    assert r["requests"] == 24 and not r["wrong"], r["wrong"]
    assert len(r["added"].get("added", [])) == len(extra), r["added"]
    # nothing lost: every image is there, each added one is found by itself, and on disk too
    assert httpx.get(url + "/info").json()["images"] == before + len(extra)
    for a in r["added"]["added"][:3]:
        hit = httpx.post(url + "/search", data={"id": a["id"], "top": 1}, timeout=60).json()["results"][0]
        assert hit["id"] == a["id"]
    from imret.index.store import Index

    assert len(Index.load(index)) == before + len(extra)
