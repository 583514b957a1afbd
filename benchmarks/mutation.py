"""Mutation testing of the numeric cores with mutmut: killed / survived per module.

    python benchmarks/mutation.py [--modules rerank local.verify ...] [--limit 1800] [--nice 15]

Each module is mutated on its own, in a copy of the repository, and each mutant runs
only that module's fast tests (``MODULES``), single-threaded, under ``nice``, with a
wall-clock limit per module (a module cut short reports what it finished). mutmut
3's "not checked" mutants (not reached in time) are listed apart; timeouts count as
killed and have their own column too: on modules that run torch, mutmut 3's forked
children can hang (seen here on heads/netvlad.py: every mutant a timeout, the CPU idle),
which says nothing of the tests.
mutmut 2.5.1, which runs each mutant's tests in a fresh process, measured those modules
(README). Survivors are printed so that they can be judged (equivalent, or a missing test).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_spine import table  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# module → (file, the tests that exercise it and run in seconds)
MODULES = {
    "heads": ("imret/heads/functional.py", ["tests/heads/test_functional.py", "tests/heads/test_functional_exact.py"]),
    "rerank": ("imret/rerank/functional.py", ["tests/rerank/test_steps_exact.py", "tests/rerank/test_full_database.py",
                                              "tests/rerank/test_rerank_functional_exact.py"]),
    "local.verify": ("imret/local/verify.py", ["tests/local/test_delf_matching.py", "tests/local/test_verify_exact.py"]),
    "local.extract": ("imret/local/extract.py", ["tests/local/test_extract_exact.py"]),
    "metrics": ("imret/evaluation/metrics.py", ["tests/evaluation/test_metrics.py"]),
}


def run_module(name: str, limit: int, niceness: int) -> dict:
    path, tests = MODULES[name]
    tests = [t for t in tests if os.path.exists(os.path.join(ROOT, t))]
    work = tempfile.mkdtemp(prefix=f"mutation-{name}-")
    for part in ("imret", "tests", "pyproject.toml"):
        src = os.path.join(ROOT, part)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(work, part))
    with open(os.path.join(work, "setup.cfg"), "w") as f:
        # list values are one per line (mutmut's setup.cfg reader)
        f.write("[mutmut]\nsource_paths=imret\n"
                f"only_mutate={path}\n"
                "pytest_add_cli_args_test_selection=\n" + "".join(f"    {t}\n" for t in tests) +
                "pytest_add_cli_args=\n    -p\n    no:cacheprovider\n"
                "use_git_change_detection=False\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    t = time.time()
    proc = subprocess.run(["nice", "-n", str(niceness), "timeout", str(limit), sys.executable, "-m", "mutmut", "run",
                           "--max-children", "1"], cwd=work, env=env, capture_output=True, text=True)
    took = time.time() - t
    subprocess.run([sys.executable, "-m", "mutmut", "export-cicd-stats"], cwd=work, env=env, capture_output=True)
    stats_path = os.path.join(work, "mutants", "mutmut-cicd-stats.json")
    stats = json.load(open(stats_path)) if os.path.exists(stats_path) else {}
    res = subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=work, env=env, capture_output=True, text=True)
    survivors = [line.split(":")[0].strip() for line in res.stdout.splitlines() if line.strip().endswith("survived")]
    return {"module": name, "file": path, "tests": tests, "seconds": took, "stats": stats, "survivors": survivors,
            "work": work, "rc": proc.returncode, "tail": (proc.stdout + proc.stderr)[-800:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", nargs="+", default=list(MODULES), choices=list(MODULES))
    ap.add_argument("--limit", type=int, default=1800, help="seconds per module")
    ap.add_argument("--nice", type=int, default=15)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    print(f"load: {os.getloadavg()[0]:.1f}")
    rows, out = [], []
    for name in args.modules:
        r = run_module(name, args.limit, args.nice)
        s = r["stats"]
        killed = s.get("killed", 0) + s.get("timeout", 0)  # a timeout kills; its own column shows how many
        done = killed + s.get("survived", 0)
        rows.append((name, r["file"], str(s.get("total", "?")), str(killed), str(s.get("survived", "?")),
                     str(s.get("timeout", "?")), str(s.get("not_checked", "?")),
                     f"{100 * killed / done:.1f}" if done else "-", f"{r['seconds']:.0f}"))
        out.append(r)
        by_function: dict[str, int] = {}
        for m in r["survivors"]:  # module.x_function__mutmut_N → function
            f = m.rsplit(".", 1)[-1].split("__mutmut_")[0].lstrip("x").lstrip("_").replace("ǁ", ".")
            by_function[f] = by_function.get(f, 0) + 1
        print(f"{name}: survivors by function: " + (", ".join(f"{f} {n}" for f, n in by_function.items()) or "-")
              + f" (mutmut results / mutmut show NAME in {r['work']})", flush=True)
        if not s:
            print(r["tail"])
    table("Mutation testing (mutmut; each module with its own tests)",
          ["module", "file", "mutants", "killed", "survived", "timeout", "not checked", "killed %", "s"], rows)
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
