"""How many threads extraction may use: the CPUs this process can really run on.

``os.cpu_count()`` counts the machine's CPUs, not this process's: a container with
a CPU quota of 2 on a 64-core host, or a process pinned to 2 cores, would start 64
OpenMP threads that wait on each other. On a shared machine the cost is worse than
lost parallelism: every operator of a network waits at its barrier for the one
thread the scheduler has put aside (measured: a 128 ms EfficientNet-Lite0 pass took
3.9 s with 2 threads on 2 busy cores). So the policy is

- the usable CPUs are the smaller of the affinity mask (``sched_getaffinity``) and
  the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``),
  rounded down, at least 1;
- they are shared between the extraction processes (``workers``);
- in each process, one CPU is left to the thread that decodes the next photo when
  the process has 3 or more; with 1 or 2 it runs one intra-op thread, because two
  OpenMP threads on two cores stall whenever anything else runs on the machine;
- inter-op threads are 1: extraction runs one operator at a time.

The functions that read the system take the files and the affinity as arguments,
so tests can give them fake ones.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

AUTO = "auto"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def parse_cpu_max(text: str | None) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line ("QUOTA PERIOD", or "max PERIOD"); None: no limit."""
    if not text:
        return None
    parts = text.split()
    if parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota: str | None, period: str | None) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: no limit)."""
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _cgroup_dirs(proc_cgroup: str | None) -> tuple[str | None, dict[str, str]]:
    """(v2 path, {v1 controller: path}) of this process, from ``/proc/self/cgroup``."""
    v2, v1 = None, {}
    for line in (proc_cgroup or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            v2 = path
        for c in controllers.split(","):
            if c:
                v1[c] = path
    return v2, v1


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup", proc_cgroup: str | None = None) -> float | None:
    """The tightest CPU quota over this process's cgroup and its ancestors (v2 or v1);
    None when there is none. ``proc_cgroup``: the text of ``/proc/self/cgroup``."""
    if proc_cgroup is None:
        proc_cgroup = _read("/proc/self/cgroup")
    v2, v1 = _cgroup_dirs(proc_cgroup)
    limits = []
    if v2 is not None:
        # Walk up from our own cgroup: a parent's quota binds its children too. Inside a
        # container the namespace root may be our cgroup, so the root file counts.
        rel = v2.strip("/")
        parts = rel.split("/") if rel else []
        for i in range(len(parts), -1, -1):
            limits.append(parse_cpu_max(_read(os.path.join(root, *parts[:i], "cpu.max"))))
    v1_path = v1.get("cpu")
    if v1_path is not None:
        rel = v1_path.strip("/")
        for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            base = os.path.join(root, mount)
            if not os.path.isdir(base):
                continue
            parts = rel.split("/") if rel else []
            for i in range(len(parts), -1, -1):
                d = os.path.join(base, *parts[:i])
                limits.append(parse_cfs(_read(os.path.join(d, "cpu.cfs_quota_us")),
                                        _read(os.path.join(d, "cpu.cfs_period_us"))))
    limits = [x for x in limits if x is not None]
    return min(limits) if limits else None


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where the OS has no mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_cpus(affinity: int | Sequence[int] | None = None, quota: float | None | str = AUTO) -> int:
    """Whole CPUs this process may use: min(affinity, cgroup quota), rounded down, ≥ 1.

    ``affinity``: a count or a set of CPU ids (default: this process's mask);
    ``quota``: CPUs of a quota, None for none (default: read from the cgroup files)."""
    n = affinity_cpus() if affinity is None else (affinity if isinstance(affinity, int) else len(affinity))
    q = cgroup_cpu_limit() if quota == AUTO else quota
    if q is not None:
        n = min(n, math.floor(q + 1e-9))
    return max(1, int(n))


@dataclass(frozen=True)
class ThreadPlan:
    """``intra``: torch intra-op threads per process; ``interop``: torch inter-op threads;
    ``workers``: extraction processes; ``cpus``: the usable CPUs it was made for."""

    intra: int
    interop: int
    workers: int
    cpus: int

    def __post_init__(self):
        for name in ("intra", "interop", "workers", "cpus"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"ThreadPlan.{name} must be a positive integer, got {v!r}")

    def spec(self) -> str:
        return f"threads={self.intra},interop={self.interop},workers={self.workers},cpus={self.cpus}"


def parse_count(text: str | int | None, what: str = "threads") -> int | str | None:
    """'auto', None or a positive integer (as text or int); anything else is a ValueError naming ``what``."""
    if text is None or text == AUTO:
        return text
    if isinstance(text, int) and not isinstance(text, bool) and text >= 1:
        return text
    if isinstance(text, str) and text.strip().isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(f"--{what} must be a positive integer or 'auto', got {text!r}")


def auto_workers(cpus: int) -> int:
    """Extraction processes for ``cpus`` usable CPUs: one per CPU pair, each running one
    or two intra-op threads, at least one. On 2 cores one process with one thread per
    photo and a decode thread beside it was measured best (benchmarks/bench_extract.py)."""
    return max(1, cpus // 2)


def plan_threads(threads: int | str | None = AUTO, workers: int | str | None = 1,
                 cpus: int | None = None) -> ThreadPlan:
    """The thread plan for ``workers`` extraction processes (int or 'auto') with ``threads``
    intra-op threads each (int, or 'auto'/None: chosen from the usable ``cpus``).

    A given ``threads`` is taken as asked, but never above the process's share of the
    CPUs: more would only make OpenMP threads wait for each other."""
    cpus = usable_cpus() if cpus is None else max(1, int(cpus))
    threads, workers = parse_count(threads, "threads"), parse_count(workers, "workers")
    w = auto_workers(cpus) if workers in (None, AUTO) else min(int(workers), cpus)
    share = max(1, cpus // w)
    if threads in (None, AUTO):
        intra = share - 1 if share >= 3 else 1
    else:
        intra = min(int(threads), share)
    return ThreadPlan(intra=intra, interop=1, workers=w, cpus=cpus)


def apply_plan(plan: ThreadPlan) -> None:
    """Set torch's thread counts (and the OpenMP/MKL variables that worker processes inherit)."""
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(plan.intra)
    torch.set_num_threads(plan.intra)
    try:
        torch.set_num_interop_threads(plan.interop)
    except RuntimeError:
        pass  # fixed once parallel work has started in this process; intra-op is what counts


@contextmanager
def limit_threads(threads: int | str | None) -> Iterator[int]:
    """Run the block with ``threads`` torch intra-op threads ('auto': by ``plan_threads``;
    None: leave torch as it is), restoring the previous count after. Yields the count."""
    import torch

    before = torch.get_num_threads()
    if threads is None:
        yield before
        return
    n = plan_threads(threads, 1).intra
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != before:
            torch.set_num_threads(before)
