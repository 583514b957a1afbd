"""Extraction speed against the network's own time, idle and beside a busy process.

    python benchmarks/bench_extract.py --data ../shared/data/paris6k-sub [--photos 24] [--big 8]

On ``--photos`` photos of ``--data`` and on ``--big`` 12-megapixel (4032×3024) JPEG copies
of them written to a temporary folder, it prints

- decoding: ms per photo to decode and make the backbone inputs, whole vs reduced in
  the DCT domain (``load_image(reduce_to=...)``), CPU and wall time, and the cosine
  between the descriptors of the two;
- the bare forward: photos/s of backbone + head alone on the already made inputs of the
  same photos (one call per scale), for 1 and 2 threads and with ``channels_last``;
- ``imret index`` (``Index.build`` with its journal, decoding included) photos/s for
  threads 1/2/auto × workers 1/2/auto, idle and with one competing busy process that
  the benchmark starts and stops itself (it also exits by itself after ``--busy-limit`` s).

Last line: ``ratio_idle=… ratio_busy=…``: ratio_idle = imret photos/s (threads auto,
workers auto) ÷ bare-forward photos/s with the same threads per process, without the
competing process; ratio_busy = the same imret photos/s with it ÷ without it. The
load average is printed before and after: on a shared machine "idle" only means
without the benchmark's own competitor.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from imret.index.workers import ParallelExtractor
from imret.extractor import Extractor
from imret.index.store import Index
from imret.io.images import load_image
from imret.presets import get_preset
from imret.core.threads import plan_threads, usable_cpus

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_spine import table  # noqa: E402

BIG = (4032, 3024)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def photos(data: str, n: int) -> list[str]:
    found = sorted(glob.glob(os.path.join(data, "jpg", "*.jpg")) or glob.glob(os.path.join(data, "**", "*.jpg"),
                                                                               recursive=True))
    if not found:
        sys.exit(f"bench_extract: --data {data}: no .jpg photos found")
    return found[:n]


def big_copies(paths: list[str], folder: str) -> list[str]:
    """12-megapixel JPEG copies (upscaled, quality 92, the size and quality of a phone photo)."""
    os.makedirs(folder, exist_ok=True)
    out = []
    for p in paths:
        with Image.open(p) as im:
            size = BIG if im.width >= im.height else BIG[::-1]
            q = os.path.join(folder, os.path.basename(p))
            im.convert("RGB").resize(size, Image.BICUBIC).save(q, quality=92)
            out.append(q)
    return out


def timed(f):
    w, c = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - w, time.process_time() - c


def bench_decode(ex: Extractor, sets: dict[str, list[str]]):
    rows = []
    torch.set_num_threads(1)
    for name, paths in sets.items():
        fw, fc, rw, rc, cos = [], [], [], [], []
        for p in paths:
            full, w1, c1 = timed(lambda: ex.prepare(load_image(p)))
            red, w2, c2 = timed(lambda: ex.prepare(ex.load(p)))
            fw.append(w1), fc.append(c1), rw.append(w2), rc.append(c2)
            cos.append(float(ex.describe([full])[0] @ ex.describe([red])[0]))
        rows.append([name, len(paths), f"{1000 * np.median(fw):.0f}", f"{1000 * np.median(fc):.0f}",
                     f"{1000 * np.median(rw):.0f}", f"{1000 * np.median(rc):.0f}", f"{min(cos):.5f}",
                     f"{np.mean(cos):.5f}"])
    table("decode + backbone inputs, ms per photo (median), one thread",
          ["photos", "n", "whole wall", "whole cpu", "reduced wall", "reduced cpu", "cos min", "cos mean"], rows)
    return rows


def bare_forward(ex: Extractor, inputs, threads: int, channels_last: bool | None = None) -> float:
    """Photos/s of backbone + head alone, one call per scale per photo (layout: the
    extractor's unless ``channels_last`` says)."""
    torch.set_num_threads(threads)
    cl = ex.channels_last if channels_last is None else channels_last
    layout = torch.channels_last if cl else torch.contiguous_format
    ex.backbone.to(memory_format=layout)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for scales in inputs:
            for x in scales:
                ex.head(ex.backbone(x.contiguous(memory_format=layout)))
    rate = len(inputs) / (time.perf_counter() - t0)
    ex.backbone.to(memory_format=torch.channels_last if ex.channels_last else torch.contiguous_format)
    return rate


def imret_index(ex: Extractor, folder: str, threads, workers, tmp: str) -> tuple[float, str]:
    """Photos/s of ``Index.build`` (journaled, decoding included) with this thread plan."""
    plan = plan_threads(threads, workers)
    torch.set_num_threads(plan.intra)
    extractor = ParallelExtractor(ex, plan) if plan.workers > 1 else ex
    journal = os.path.join(tmp, "bench.journal")
    t0 = time.perf_counter()
    index, report = Index.build([folder], ex.preset, extractor=extractor, journal_path=journal)
    rate = report.indexed / (time.perf_counter() - t0)
    Index.finish_journal(journal)
    return rate, f"{plan.intra}×{plan.workers}"


class Competitor:
    """One busy Python process (a spinning loop) that exits by itself after ``limit`` s."""

    def __init__(self, limit: float):
        self.limit = limit
        self.proc = None

    def __enter__(self):
        code = f"import time\nt = time.time() + {self.limit}\nwhile time.time() < t:\n    pass\n"
        self.proc = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/paris6k-sub", help="photos (revisitop layout or a folder)")
    ap.add_argument("--photos", type=int, default=24, help="photos indexed per measurement")
    ap.add_argument("--big", type=int, default=8, help="12-megapixel copies made of the first photos")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--busy-limit", type=float, default=900, help="the competing process exits after this")
    args = ap.parse_args(argv)

    print(f"before: {uptime()}")
    print(f"usable CPUs (affinity, cgroup quota): {usable_cpus()}; auto plan: {plan_threads('auto', 'auto').spec()}")
    paths = photos(args.data, args.photos)
    ex = Extractor(get_preset(args.preset), device="cpu")
    tmp = tempfile.mkdtemp(prefix="bench_extract_")
    try:
        small = os.path.join(tmp, "photos")
        os.makedirs(small)
        for p in paths:
            shutil.copy(p, small)
        big = os.path.join(tmp, "big")
        big_paths = big_copies(paths[:args.big], big)
        bench_decode(ex, {f"{os.path.basename(args.data.rstrip('/'))}": paths, "12-Mpx copies": big_paths})

        torch.set_num_threads(1)
        inputs = [ex.prepare(ex.load(p)) for p in paths]
        auto = plan_threads("auto", "auto")
        bare = {}
        rows = []
        for t, cl in ((1, False), (1, True), (2, False), (2, True)):
            bare_forward(ex, inputs[:2], t, cl)  # warm-up
            bare[(t, cl)] = bare_forward(ex, inputs, t, cl)
            rows.append([t, "yes" if cl else "no", f"{bare[(t, cl)]:.2f}"])
        table(f"bare forward (backbone + head, inputs made), {len(inputs)} photos",
              ["threads", "channels_last", "photos/s"], rows)

        configs = [(1, 1), (2, 1), ("auto", 1), (1, 2), ("auto", "auto")]
        rates: dict = {}
        for cond in ("idle", "busy"):
            ctx = Competitor(args.busy_limit) if cond == "busy" else None
            if ctx:
                ctx.__enter__()
            try:
                for threads, workers in configs:
                    rates[(cond, threads, workers, "small")] = imret_index(ex, small, threads, workers, tmp)
                rates[(cond, "auto", "auto", "big")] = imret_index(ex, big, "auto", "auto", tmp)
                rates[(cond, "bare")] = bare_forward(ex, inputs, auto.intra)
            finally:
                if ctx:
                    ctx.__exit__()
            print(f"after {cond}: {uptime()}", flush=True)
        rows = []
        for threads, workers in configs:
            (ri, plan), (rb, _) = rates[("idle", threads, workers, "small")], rates[("busy", threads, workers, "small")]
            rows.append([f"{threads}/{workers}", plan, "photos", f"{ri:.2f}", f"{rb:.2f}", f"{rb / ri:.2f}"])
        (ri, plan), (rb, _) = rates[("idle", "auto", "auto", "big")], rates[("busy", "auto", "auto", "big")]
        rows.append(["auto/auto", plan, "12-Mpx", f"{ri:.2f}", f"{rb:.2f}", f"{rb / ri:.2f}"])
        rows.append(["bare forward", f"{auto.intra}×1", "photos", f"{rates[('idle', 'bare')]:.2f}",
                     f"{rates[('busy', 'bare')]:.2f}", f"{rates[('busy', 'bare')] / rates[('idle', 'bare')]:.2f}"])
        table("imret index photos/s (threads/workers asked, threads×processes used), without and with "
              "one competing busy process", ["asked", "used", "set", "idle", "busy", "busy/idle"], rows)
        imret_idle = rates[("idle", "auto", "auto", "small")][0]
        imret_busy = rates[("busy", "auto", "auto", "small")][0]
        print(f"\nafter: {uptime()}")
        print(f"ratio_idle={imret_idle / rates[('idle', 'bare')]:.2f} ratio_busy={imret_busy / imret_idle:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
