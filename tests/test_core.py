"""The core: one atomic write, one bbox parser, registries that load their built-ins."""
import os
import subprocess
import sys

import pytest

from imret.core.atomic import atomic_write
from imret.core.bbox import parse_bbox
from imret.core.errors import ConfigError
from imret.core.registry import Registry


def test_atomic_write_replaces_the_file_or_leaves_it(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")

    def fail(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, fail)
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]  # no temporary file left
    atomic_write(p, lambda tmp: open(tmp, "wb").write(b"new"))
    assert p.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.bin"]


@pytest.mark.parametrize("text, reason", [("1,2,3", "with x1>x0"), ("a,b,c,d", "numbers"), ("5,5,1,1", "x1>x0")])
def test_bad_boxes_are_refused_with_the_text(text, reason):
    with pytest.raises(ConfigError, match=reason) as err:
        parse_bbox(text)
    assert repr(text) in str(err.value)


def test_a_box_parses_to_floats():
    assert parse_bbox("0,1.5,10,20") == (0.0, 1.5, 10.0, 20.0)


def test_a_registry_without_builtins_knows_only_what_registered():
    r = Registry("test thing")
    r.register("a")(1)
    assert r.names() == ["a"] and "b" not in r
    with pytest.raises(KeyError, match="unknown test thing 'b'; known: a"):
        r.get("b")


def test_builtins_load_on_first_lookup_without_importing_them():
    # a fresh process: asking for sv finds it, with nobody importing imret.local first
    code = ("import sys; from imret.core.registry import STEPS, HEADS; "
            "assert 'imret.local.steps' not in sys.modules; "
            "print(STEPS.get('svh').__name__, 'dagf' in HEADS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["HomographyVerification", "True"]
