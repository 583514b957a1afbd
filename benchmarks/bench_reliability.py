"""Attacks on imret's writes, files and service, repeated; what held and what did not.

    python benchmarks/bench_reliability.py [--data ../shared/data/ukbench/full] [--flips 200]

Bounded: a few hundred cases, a 'fast'-preset index of 8 photos, a real ``imret serve``
on 127.0.0.1 (loopback only). Prints cases tried / handled / failed per area. "Handled"
means the case ended as the issue asks: refused with an ``IndexFileError`` (files) or
the right HTTP status (service), or answered correctly; "failed" is anything else
(a silently accepted change, a traceback, a 500, lost work).
"""
from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_service import start_server  # noqa: E402
from bench_spine import table  # noqa: E402

from imret.errors import IndexFileError  # noqa: E402
from imret.index import fileformat  # noqa: E402
from imret.index.journal import Journal  # noqa: E402
from imret.index.lock import writer_lock  # noqa: E402
from imret.index.store import Index  # noqa: E402
from imret.presets import get_preset  # noqa: E402

TOKEN = "bench-token"


class Tally:
    def __init__(self):
        self.rows: dict[str, list[int]] = {}
        self.notes: list[str] = []

    def case(self, area: str, ok: bool, what: str = "") -> None:
        r = self.rows.setdefault(area, [0, 0])
        r[0] += 1
        r[1] += bool(ok)
        if not ok and len(self.notes) < 20:
            self.notes.append(f"{area}: {what}")


def _raw_index(folder: str, n: int = 6, dim: int = 8) -> str:
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    p = get_preset("fast")
    p = p.replace(whitening=p.whitening.replace(kind="none"))
    paths = [os.path.join(folder, "photos", f"p{i}.jpg") for i in range(n)]
    index = Index.from_raw(p, dim, paths, rng.normal(size=(n, dim)).astype(np.float32), [os.path.join(folder, "photos")])
    out = os.path.join(folder, "raw.index")
    index.save(out)
    return out


def _writer(path: str, tag: str, n: int, q) -> None:
    """A process adding ``n`` images one save at a time, each under the lock."""
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    for k in range(n):
        with writer_lock(path, wait_s=60):
            idx = Index.load(path)
            idx.add_descriptors([f"/{tag}/{k}.jpg"], rng.normal(size=(1, idx.raw_dim)).astype(np.float32))
            idx.save(path)
    q.put(tag)


def attack_writers(t: Tally, folder: str, rounds: int) -> None:
    for r in range(rounds):
        path = _raw_index(os.path.join(folder, f"w{r}"))
        q = mp.get_context("fork").Queue()
        procs = [mp.get_context("fork").Process(target=_writer, args=(path, f"t{k}", 5, q)) for k in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        idx = Index.load(path)
        t.case("concurrent writers", len(idx) == 6 + 15 and len(set(idx.ids.tolist())) == 21,
               f"{len(idx)} images after 3×5 locked adds")


def attack_header(t: Tally, folder: str, flips: int) -> None:
    path = _raw_index(os.path.join(folder, "h"))
    data = open(path, "rb").read()
    hlen = int.from_bytes(data[12:20], "little")
    rng = np.random.default_rng(1)
    base = Index.load(path)
    for pos in rng.choice(20 + hlen + 32, min(flips, 20 + hlen + 32), replace=False):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(8))
        p = os.path.join(folder, "h", "flipped.index")
        open(p, "wb").write(bad)
        try:
            got = Index.load(p)
            same = got.paths == base.paths and got.next_id == base.next_id and \
                got.preset.to_dict() == base.preset.to_dict() and got.roots == base.roots
            t.case("index header byte flips", same, f"flip at {pos} accepted")
        except IndexFileError:
            t.case("index header byte flips", True)
        except Exception as exc:  # noqa: BLE001 (what the benchmark counts)
            t.case("index header byte flips", False, f"flip at {pos}: {type(exc).__name__}")


def attack_local(t: Tally, local_index: str, flips: int) -> None:
    from imret.local import local_path

    src = local_path(local_index)
    data = open(src, "rb").read()
    base = Index.load(local_index)
    want = {i: base.local.features(i) for i in base.local.ids}
    rng = np.random.default_rng(2)
    folder = os.path.dirname(local_index)
    for k in range(flips):
        for n in ("copy.index", "copy.index.local.h5"):
            if os.path.exists(os.path.join(folder, n)):
                os.unlink(os.path.join(folder, n))
        shutil.copy(local_index, os.path.join(folder, "copy.index"))
        bad = bytearray(data)
        pos = int(rng.integers(len(bad) - 16))
        bad[pos:pos + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        open(os.path.join(folder, "copy.index.local.h5"), "wb").write(bad)
        try:
            idx = Index.load(os.path.join(folder, "copy.index"))
            got = {i: idx.local.features(i) for i in idx.local.ids}
            same = set(got) == set(want) and all(np.array_equal(got[i].xy, want[i].xy) and
                                                 np.array_equal(got[i].descriptors, want[i].descriptors)
                                                 for i in want)
            t.case("local file 16-byte corruptions", same, f"corruption at {pos} accepted")
        except IndexFileError:
            t.case("local file 16-byte corruptions", True)
        except Exception as exc:  # noqa: BLE001
            t.case("local file 16-byte corruptions", False, f"at {pos}: {type(exc).__name__}: {exc}")


def _consistent(path: str) -> tuple[bool, str]:
    """Whether the index at ``path`` loads with local features for exactly its images."""
    try:
        idx = Index.load(path)
    except IndexFileError as exc:
        return False, f"unloadable after a kill: {exc}"
    have = sorted(idx.local.ids) if idx.local is not None else []
    ids = sorted(int(i) for i in idx.ids)
    return have == ids, f"{len(ids)} images, {len(have)} with local features"


def attack_kills(t: Tally, local_index: str, photos: list[str], rounds: int) -> None:
    """SIGKILL of ``imret add`` / ``imret remove`` on a --local index at a random moment: right
    after the kill the two parts must agree (one commit), and the rerun must finish the work."""
    import signal
    import subprocess

    folder = os.path.join(os.path.dirname(local_index), "kills")
    extra = os.path.join(folder, "extra")
    os.makedirs(extra)
    for p in photos:
        shutil.copy(p, extra)
    rng = np.random.default_rng(4)
    imret = [sys.executable, "-m", "imret.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    from imret.local import local_path

    for r in range(rounds):
        path = os.path.join(folder, f"k{r}.index")
        shutil.copy(local_index, path)
        shutil.copy(local_path(local_index), local_path(path))
        n0 = len(Index.load(path))
        removing = r % 2 == 1
        if removing:
            victim = Index.load(path).paths[int(rng.integers(n0))]
            cmd = imret + ["remove", path, victim]
        else:
            cmd = imret + ["add", path, extra, "-q"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(float(rng.uniform(0.5, 8.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ok, what = _consistent(path)
        t.case("kill -9 during add/remove (--local)", ok, f"right after the kill: {what}")
        rerun = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
        ok, what = _consistent(path)
        want = n0 - 1 if removing else n0 + len(photos)
        n = len(Index.load(path)) if ok else -1
        t.case("kill -9 during add/remove (--local)", ok and n == want and "Traceback" not in rerun.stderr,
               f"after the rerun: {what} (want {want}); {rerun.stderr.strip()[-200:]}")


def attack_journal(t: Tally, folder: str) -> None:
    p = os.path.join(folder, "j.journal")
    j = Journal(p, {"preset": "x"}, 4).open()
    for k in range(5):
        j.append(f"/img{k}.jpg", np.full(4, k, np.float32))
    j.close()
    data = open(p, "rb").read()
    for n in range(0, len(data) + 1, 3):
        open(p, "wb").write(data[:n])
        try:
            paths, _ = Journal(p, {"preset": "x"}, 4).read()
            ok = paths == [f"/img{k}.jpg" for k in range(len(paths))]
            j = Journal(p, {"preset": "x"}, 4)
            j.read()
            j.open()
            j.append("/next.jpg", np.zeros(4, np.float32))
            j.close()
            ok = ok and Journal(p, {"preset": "x"}, 4).read()[0][-1] == "/next.jpg"
            t.case("journal truncations (resume)", ok, f"cut at {n}")
        except Exception as exc:  # noqa: BLE001
            t.case("journal truncations (resume)", False, f"cut at {n}: {type(exc).__name__}: {exc}")


def attack_disk(t: Tally, folder: str) -> None:
    from imret.cli import main

    def no_space(fd):
        raise OSError(28, "No space left on device")

    for k in range(5):
        path = _raw_index(os.path.join(folder, f"d{k}"))
        before = open(path, "rb").read()
        real = fileformat.os.fsync
        fileformat.os.fsync = no_space
        try:
            rc = main(["remove", path, Index.load(path).paths[k]])
        except BaseException as exc:  # noqa: BLE001
            rc = f"{type(exc).__name__}"
        finally:
            fileformat.os.fsync = real
        left = [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".tmp")]
        t.case("full disk on save", rc == 1 and open(path, "rb").read() == before and not left,
               f"rc {rc}, {len(left)} temporaries")


def _raw_http(url: str, request: bytes, body_chunks=(), timeout=10) -> int:
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        try:
            for c in body_chunks:
                s.sendall(c)
        except OSError:
            pass  # the server stopped reading: what it should do
        resp = b""
        while b"\r\n" not in resp:
            chunk = s.recv(4096)
            if not chunk:
                break
            resp += chunk
    return int(resp.split(b" ")[1]) if resp else 0


def attack_service(t: Tally, index_path: str, photos: list[str], folder: str) -> None:
    import httpx
    from PIL import Image

    proc, url = start_server(index_path, TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            base = c.get("/info").json()["images"]
            # body caps and the token, checked before the body
            t0 = time.time()
            st = _raw_http(url, b"POST /index/add HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                                b"boundary=x\r\nContent-Length: 1073741824\r\n\r\n", [b"x" * 65536] * 16)
            t.case("body before token/cap", st == 401 and time.time() - t0 < 5, f"no-token 1 GiB add: {st}")
            st = _raw_http(url, b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                                b"boundary=x\r\nContent-Length: 1073741824\r\n\r\n", [b"x" * 65536] * 16)
            t.case("body before token/cap", st == 413, f"1 GiB search: {st}")
            part = (b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
                    b"Content-Type: image/jpeg\r\n\r\n")
            chunks = [b"%x\r\n%s\r\n" % (len(part), part)] + [b"%x\r\n%s\r\n" % (65536, b"x" * 65536)] * 400
            st = _raw_http(url, b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                                b"boundary=x\r\nTransfer-Encoding: chunked\r\n\r\n", chunks)
            t.case("body before token/cap", st == 413, f"chunked 26 MB search: {st}")
            # Host header
            for host, want in (("127.0.0.1", 200), ("localhost", 200), ("attacker.example", 400),
                               ("127.0.0.1.nip.io", 400), ("", 400)):
                st = _raw_http(url, f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                t.case("Host header", st == want, f"Host {host!r}: {st}")
            # boxes
            for box in ("nan,nan,nan,nan", "0,0,inf,inf", "0,0,1e309,1e309", "-inf,0,1,1", "1,1,0,0"):
                st = c.post("/search", data={"id": 0, "bbox": box}).status_code
                t.case("non-finite / bad boxes", st == 422, f"{box}: {st}")
            # decode memory
            for mode, shape in (("I;16", (7000, 7000)), ("RGBA", (7000, 7000))):
                buf = io.BytesIO()
                im = Image.fromarray(np.zeros(shape, np.uint16)) if mode == "I;16" else \
                    Image.new("RGBA", shape[::-1])
                im.save(buf, "PNG")
                st = c.post("/search", files={"file": ("big.png", buf.getvalue(), "image/png")}).status_code
                t.case("decode memory", st == 413, f"{mode} {shape}: {st}")
            # racing uploads: same name, same second, a rejected one in between, 3 concurrent writers
            answers, lock = [], threading.Lock()

            def add(k):
                with httpx.Client(base_url=url, timeout=300) as cc:
                    files = [("files", ("same.jpg", open(photos[k], "rb").read(), "image/jpeg"))]
                    if k == 1:
                        files.append(("files", ("junk.jpg", b"\xff\xd8 junk", "image/jpeg")))
                    r = cc.post("/index/add", headers=auth, files=files)
                    with lock:
                        answers.append((k, r.status_code, r.json().get("added", []) if r.status_code == 200 else []))

            ths = [threading.Thread(target=add, args=(k,)) for k in range(3)]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            rej = c.post("/index/add", headers=auth, files=[("files", ("same.jpg", b"not an image", "image/jpeg"))])
            t.case("racing uploads", rej.status_code == 415, f"rejected upload: {rej.status_code}")
            for k, st, added in answers:
                ok = st == 200 and len(added) == 1
                ok = ok and c.get(f"/images/{added[0]['id']}").content == open(photos[k], "rb").read()
                t.case("racing uploads", ok, f"writer {k}: {st} {added}")
            t.case("racing uploads", c.get("/info").json()["images"] == base + 3, "image count")
            # another writer (the CLI) saves while the service holds the index
            other = Index.load(index_path)
            gone = int(other.ids[0])
            with writer_lock(index_path):
                other.remove([gone])
                other.save(index_path)
            victim = int(other.ids[0])
            st = c.delete(f"/index/{victim}", headers=auth).status_code
            saved = Index.load(index_path)
            t.case("service vs CLI writer", st == 200 and gone not in saved.ids and victim not in saved.ids
                   and len(saved) == base + 1, f"delete {st}, {len(saved)} saved")
            st = c.delete(f"/index/{gone}", headers=auth).status_code
            t.case("service vs CLI writer", st == 404, f"delete of an id the CLI removed: {st}")
            for r in (c.get("/health"), c.get("/info")):
                t.case("no 500s", r.status_code == 200, f"{r.request.url}: {r.status_code}")
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join("..", "shared", "data", "ukbench", "full"))
    ap.add_argument("--flips", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kills", type=int, default=8, help="kill -9 rounds on a --local index (add, remove)")
    args = ap.parse_args(argv)
    from imret.core.paths import collect_paths

    photos = collect_paths([args.data])[:11]
    t = Tally()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="imret-rel-") as folder:
        attack_writers(t, folder, args.rounds)
        attack_header(t, folder, args.flips)
        attack_journal(t, folder)
        attack_disk(t, folder)
        db = os.path.join(folder, "db")
        os.makedirs(db)
        for p in photos[:8]:
            shutil.copy(p, db)
        index, _ = Index.build([db], get_preset("fast"))
        from imret.local.commands import build_local

        build_local(index, "fast")
        path = os.path.join(folder, "svc.index")
        index.save(path)
        attack_local(t, path, args.flips // 4)
        attack_kills(t, path, photos[8:11], args.kills)
        for n in os.listdir(folder):
            if n.startswith("copy.index"):
                os.unlink(os.path.join(folder, n))
        attack_service(t, path, photos[8:11], folder)
    rows = [(area, tried, ok, tried - ok) for area, (tried, ok) in t.rows.items()]
    rows.append(("total", sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows)))
    table(f"reliability ({time.time() - t0:.0f} s; load {os.getloadavg()[0]:.1f})",
          ["area", "tried", "handled", "failed"], rows)
    for n in t.notes:
        print("  failed:", n)
    return 0 if rows[-1][3] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
