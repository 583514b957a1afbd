"""The thread policy, on fake cgroup files and affinity masks."""
import os

import pytest
import torch

from imret.core.threads import (ThreadPlan, auto_workers, cgroup_cpu_limit, limit_threads, parse_cfs, parse_count,
                           parse_cpu_max, plan_threads, usable_cpus)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_parse_cpu_max():
    assert parse_cpu_max("150000 100000") == 1.5
    assert parse_cpu_max("50000 100000") == 0.5
    assert parse_cpu_max("max 100000") is None
    assert parse_cpu_max("200000") == 2.0  # period defaults to 100 ms
    assert parse_cpu_max("") is None and parse_cpu_max(None) is None
    assert parse_cpu_max("garbage 1") is None


def test_parse_cfs():
    assert parse_cfs("300000", "100000") == 3.0
    assert parse_cfs("-1", "100000") is None
    assert parse_cfs(None, "100000") is None


def test_cgroup_v2_own_and_parent_quota_tightest_wins(tmp_path):
    root = str(tmp_path)
    write(f"{root}/cpu.max", "max 100000")
    write(f"{root}/user.slice/cpu.max", "250000 100000")  # parent: 2.5 CPUs
    write(f"{root}/user.slice/job/cpu.max", "max 100000")  # own cgroup: unlimited
    assert cgroup_cpu_limit(root, "0::/user.slice/job\n") == 2.5
    write(f"{root}/user.slice/job/cpu.max", "120000 100000")
    assert cgroup_cpu_limit(root, "0::/user.slice/job\n") == 1.2


def test_cgroup_v2_namespace_root(tmp_path):
    # inside a container /proc/self/cgroup says "0::/" and the quota sits at the mount root
    write(f"{tmp_path}/cpu.max", "300000 100000")
    assert cgroup_cpu_limit(str(tmp_path), "0::/\n") == 3.0


def test_cgroup_v1_quota(tmp_path):
    root = str(tmp_path)
    write(f"{root}/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "150000")
    write(f"{root}/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000")
    text = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"
    assert cgroup_cpu_limit(root, text) == 1.5
    write(f"{root}/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1")
    assert cgroup_cpu_limit(root, text) is None


def test_no_cgroup_files_no_limit(tmp_path):
    assert cgroup_cpu_limit(str(tmp_path), "0::/a/b\n") is None
    assert cgroup_cpu_limit(str(tmp_path), "") is None


def test_usable_cpus_takes_the_smaller_of_affinity_and_quota():
    assert usable_cpus(affinity={0, 1, 2, 3, 4, 5, 6, 7}, quota=2.5) == 2  # rounded down
    assert usable_cpus(affinity={3, 5}, quota=None) == 2
    assert usable_cpus(affinity=16, quota=4.0) == 4
    assert usable_cpus(affinity=8, quota=0.5) == 1  # at least one
    assert usable_cpus(affinity=[0], quota=64.0) == 1


def test_plan_auto():
    # 1-2 CPUs: one intra-op thread (two OpenMP threads on two cores stall under load)
    assert plan_threads("auto", 1, cpus=1) == ThreadPlan(intra=1, interop=1, workers=1, cpus=1)
    assert plan_threads("auto", 1, cpus=2) == ThreadPlan(intra=1, interop=1, workers=1, cpus=2)
    # 3 or more: one CPU left to the decode thread
    assert plan_threads("auto", 1, cpus=3).intra == 2
    assert plan_threads("auto", 1, cpus=8).intra == 7
    assert plan_threads(None, 1, cpus=8).intra == 7
    # workers share the CPUs; each keeps a decode CPU when its share is 3 or more
    assert plan_threads("auto", 2, cpus=8) == ThreadPlan(intra=3, interop=1, workers=2, cpus=8)
    assert plan_threads("auto", 4, cpus=8).intra == 1


def test_plan_never_oversubscribes():
    assert plan_threads(8, 1, cpus=2).intra == 2
    assert plan_threads(3, 2, cpus=4) == ThreadPlan(intra=2, interop=1, workers=2, cpus=4)
    assert plan_threads(1, 5, cpus=2).workers == 2  # more processes than CPUs: capped
    assert plan_threads("2", "1", cpus=4).intra == 2  # text from the command line


def test_auto_workers():
    assert [auto_workers(n) for n in (1, 2, 3, 4, 8)] == [1, 1, 1, 2, 4]
    assert plan_threads("auto", "auto", cpus=8) == ThreadPlan(intra=1, interop=1, workers=4, cpus=8)


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", 0, True, ""])
def test_parse_count_rejects(bad):
    with pytest.raises(ValueError, match="--threads must be a positive integer or 'auto'"):
        parse_count(bad)


def test_limit_threads_restores():
    before = torch.get_num_threads()
    with limit_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with limit_threads(None) as n:
        assert n == before


def test_cli_threads_and_workers_options(capsys):
    from imret.cli import build_parser

    ap = build_parser()
    args = ap.parse_args(["index", "d", "--out", "o", "--threads", "2", "--workers", "auto"])
    assert args.threads == 2 and args.workers == "auto"
    assert ap.parse_args(["search", "i", "q"]).threads == "auto"
    for cmd in (["add", "i", "d"], ["eval", "--dataset", "d"], ["train", "d", "--out", "o"], ["serve", "i"],
                ["demo"]):
        assert ap.parse_args(cmd + ["--threads", "1"]).threads == 1
    with pytest.raises(SystemExit) as exc:
        ap.parse_args(["index", "d", "--out", "o", "--threads", "0"])
    assert exc.value.code == 2
    assert "--threads must be a positive integer or 'auto', got '0'" in capsys.readouterr().err
