"""Presets carry their own match cut-off, read back from every index built with them."""
import json

import pytest

from imret.config import ConfigError, Preset
from imret.presets import get_preset

from imret_cli import run_imret


@pytest.mark.parametrize("bad", [-0.01, 1.01, True, "0.5", None])
def test_a_cut_off_outside_0_1_or_not_a_number_is_refused(bad):
    with pytest.raises(ConfigError, match="min_score is a cosine cut-off between 0 and 1"):
        Preset(min_score=bad)


def test_the_cut_off_round_trips_and_an_older_preset_dict_reads_the_default():
    p = Preset(min_score=0.6)
    assert Preset.from_dict(p.to_dict()).min_score == 0.6
    older = {k: v for k, v in Preset().to_dict().items() if k != "min_score"}  # written before the field
    assert Preset.from_dict(older).min_score == 0.75
    assert Preset(min_score=1).min_score == 1.0 and isinstance(Preset(min_score=1).min_score, float)


def test_each_preset_carries_the_cut_off_calibrated_for_its_descriptors():
    assert get_preset("default").min_score == 0.75
    assert get_preset("lite0-gem-tuned").min_score == 0.55


def test_search_takes_the_index_presets_cut_off_unless_told_another(photoset, copy_photos, tmp_path):
    photos = copy_photos([p for p in photoset.db if "distractor" not in p][:3], tmp_path / "photos")
    out = tmp_path / "t.index"
    run_imret("index", photos, "--out", out, "--preset", "lite0-gem-tuned", "-q")
    query = sorted(photos.iterdir())[0]
    res = json.loads(run_imret("search", out, query, "--json", "--top", "3").stdout)
    assert res["min_score"] == 0.55
    assert all(r["match"] == (r["cosine"] >= 0.55) for r in res["results"])
    told = json.loads(run_imret("search", out, query, "--json", "--min-score", "0.9").stdout)
    assert told["min_score"] == 0.9
    info = run_imret("info", out).stdout
    assert "(weights: packaged; tuned stages: lite0-ft2-v1)" in info
    assert "match       from cosine 0.55 (the preset's cut-off;" in info


def test_imret_presets_lists_one_line_each_with_its_cut_off_head_and_re_ranking():
    out = run_imret("presets").stdout.splitlines()
    cols = {line.split()[0]: line.split() for line in out[1:] if line and not line.startswith("head:")}
    assert cols["lite0-gem-tuned"][1] == "0.55"  # no learnable head: the cut-off comes second
    assert cols["default"][1] == "0.75"
    assert cols["lite0-regional"][1:4] == ["trained", "0.60", "qe"]
    assert cols["lite0-selfsim"][1:4] == ["trained", "0.75", "gfr"]
    assert len(cols) == len(out) - 3  # header, blank line, legend


def test_imret_presets_names_tell_how_each_part_was_trained():
    out = run_imret("presets", "lite0-gem-tuned", "default").stdout.splitlines()
    tuned = out.index(next(line for line in out if line.startswith("lite0-gem-tuned:")))
    following = out[tuned + 1:tuned + 4]
    assert any(line.startswith("  backbone: efficientnet-lite0, last 2 parameter groups") for line in following)
    assert any("a match from cosine 0.55 (calibrated" in line for line in following)
    default = out.index(next(line for line in out if line.startswith("default:")))
    assert out[default + 1:] == ["  a match from cosine 0.75"]
    soups = ("lite0-dagf", "lite0-regional", "lite0-icsa-netvlad", "lite0-ia-netvlad")
    out = run_imret("presets", *soups).stdout
    starts = [out.index(f"{name}:") for name in soups]
    status = [out[a:b] for a, b in zip(starts, starts[1:] + [len(out)])]
    # the recipe ships lite0-dagf blended, the others whole
    assert "shipped 0.5 of the way from its untrained start" in status[0]
    assert all("of the way" not in s for s in status[1:])
    for s in status:  # each ships the mean of three seeds' heads
        assert "the mean of the heads trained at seeds 0, 1, 2 from one start" in s


def test_imret_presets_refuses_an_unknown_name_in_one_line():
    res = run_imret("presets", "default", "nope", check=False)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "unknown preset 'nope'; known: default, fast" in res.stderr
    assert res.stdout == ""  # nothing described before the error


def test_check_ints_names_the_first_count_out_of_range_and_refuses_flags():
    from types import SimpleNamespace

    from imret.config import check_ints

    cfg = SimpleNamespace(a=1, b=0, c=2, d=True, e=2.0)
    check_ints(cfg, ("a", "c"))
    check_ints(cfg, ("b",), least=0)
    check_ints(cfg, ("c",), least=2)
    with pytest.raises(ConfigError, match=r"^b must be a positive integer, got 0$"):
        check_ints(cfg, ("a", "b", "d"))
    with pytest.raises(ConfigError, match=r"^x: a must be an integer >= 2, got 1$"):
        check_ints(cfg, ("a",), least=2, prefix="x: ")
    with pytest.raises(ConfigError, match=r"^b must be a non-negative integer, got -1$"):
        check_ints(SimpleNamespace(b=-1), ("b",), least=0)
    for flag_or_float in ("d", "e"):  # a flag for a count, or 2.0, is a mistake in the file, not 1 or 2
        with pytest.raises(ConfigError, match=flag_or_float):
            check_ints(cfg, (flag_or_float,))
