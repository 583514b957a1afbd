"""Load on ``imret serve``: concurrent searches (by upload) while images are added.

    python benchmarks/bench_service.py [--clients 4] [--requests 25]

Starts a real ``imret serve`` process on 127.0.0.1 (loopback only), sends a bounded
number of requests, checks every answer, and prints sustained queries/second and
p50/p99 latency, with and without a concurrent add. Also used by the load test.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index_path: str, token: str, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "imret", "serve", index_path, "--port", str(port),
                             "--token", token], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start in time")


def run_load(url: str, queries: dict[str, str], clients: int, requests: int, token: str,
             add_files: list[str] | None = None, deadline_s: float = 300) -> dict:
    """``queries``: query file → expected top-1 file name. Returns latencies, errors, add result."""
    lat, wrong, lock = [], [], threading.Lock()
    items = list(queries.items())
    stop_at = time.time() + deadline_s

    def client(k: int):
        with httpx.Client(timeout=60) as c:
            for i in range(requests):
                if time.time() > stop_at:
                    return
                q, want = items[(k * requests + i) % len(items)]
                t = time.perf_counter()
                with open(q, "rb") as f:
                    r = c.post(url + "/search", files={"file": (os.path.basename(q), f)}, data={"top": 3})
                dt = time.perf_counter() - t
                got = r.json()["results"][0]["name"] if r.status_code == 200 else f"HTTP {r.status_code}"
                with lock:
                    lat.append(dt)
                    if got != want:
                        wrong.append((q, got))

    added = {}

    def adder():
        files = [("files", (os.path.basename(p), open(p, "rb"))) for p in add_files]
        r = httpx.post(url + "/index/add", files=files, headers={"Authorization": f"Bearer {token}"}, timeout=600)
        added.update(r.json() if r.status_code == 200 else {"error": r.text})

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    if add_files:
        threads.append(threading.Thread(target=adder))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat_ms = np.array(lat) * 1000
    return {"requests": len(lat), "wrong": wrong, "wall_s": wall, "qps": len(lat) / wall,
            "p50_ms": float(np.percentile(lat_ms, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat_ms, 99)) if len(lat) else float("nan"), "added": added}


def photo_setup(root: str, n_db: int = 30):
    from imret.evaluation.photoset import make_photoset

    ps = make_photoset(os.path.join(root, "set"))
    photos = os.path.join(root, "photos")
    os.makedirs(photos)
    originals = [p for p in ps.db if "distractor" not in p]
    for p in ps.db[:n_db]:
        shutil.copy(p, photos)
    queries = {}
    for o in originals:
        if os.path.exists(os.path.join(photos, os.path.basename(o))):
            stem = os.path.basename(o)[:-4]
            for kind in ("crop", "jpeg", "scale"):
                queries[os.path.join(ps.root, "queries", f"{stem}__{kind}.jpg")] = os.path.basename(o)
    extra = [p for p in ps.db if "distractor" in p][n_db:n_db + 20]
    return photos, queries, extra


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=25)
    args = ap.parse_args(argv)
    root = tempfile.mkdtemp()
    photos, queries, extra = photo_setup(root)
    index = os.path.join(root, "svc.index")
    subprocess.run([sys.executable, "-m", "imret", "index", photos, "--out", index, "--preset", "fast", "-q"],
                   check=True, capture_output=True)
    proc, url = start_server(index, "bench-token")
    try:
        rows = []
        for label, add in (("searches only", None), ("searches + add of 20 images", extra)):
            r = run_load(url, queries, args.clients, args.requests, "bench-token", add)
            images = httpx.get(url + "/info").json()["images"]
            rows.append((label, r["requests"], len(r["wrong"]), f"{r['qps']:.1f}", f"{r['p50_ms']:.0f}",
                         f"{r['p99_ms']:.0f}", f"{len(r['added'].get('added', []))} → {images}"))
        print(f"\nimret serve, preset 'fast', {args.clients} clients, uploads of real photos, {os.cpu_count()} cores")
        print(f"{'load':30s} {'requests':>8s} {'wrong':>6s} {'q/s':>6s} {'p50 ms':>7s} {'p99 ms':>7s}  added → images")
        for row in rows:
            print(f"{row[0]:30s} {row[1]:>8} {row[2]:>6} {row[3]:>6} {row[4]:>7} {row[5]:>7}  {row[6]}")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
