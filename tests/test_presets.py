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


def test_imret_presets_names_a_cut_off_of_its_own():
    out = run_imret("presets").stdout.splitlines()
    tuned = out.index(next(line for line in out if line.startswith("lite0-gem-tuned ")))
    following = out[tuned + 1:tuned + 4]
    assert any("a match from cosine 0.55" in line for line in following)
    default = out.index(next(line for line in out if line.startswith("default ")))
    assert not any("a match from cosine" in line for line in out[default + 1:default + 2])
