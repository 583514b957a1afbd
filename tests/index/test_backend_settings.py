"""Each backend's typed Settings: what it validates, what it lets a built index tune, and
that the CLI's options and messages are read from them."""
from dataclasses import dataclass

import numpy as np
import pytest

from imret.cli_output import backend_words, unused_tuning
from imret.config import ConfigError, IndexConfig
from imret.core.registry import BACKENDS
from imret.index.backends import (Backend, HNSWSettings, IVFPQSettings, Settings, backends_tuning, setting,
                                  tuning_help, tuning_keys)


def test_settings_take_only_the_fields_the_backend_reads():
    cfg = IndexConfig(kind="hnsw", hnsw_m=8, ef_search=40, nprobe=3)
    s = HNSWSettings.of(cfg)
    assert (s.hnsw_m, s.ef_search, s.rescore) == (8, 40, None)
    assert not hasattr(s, "nprobe")
    assert IVFPQSettings.of(cfg).nprobe == 3


def test_tunable_fields_are_the_backends_tuning_keys():
    assert BACKENDS.get("hnsw").tuning == ("ef_search", "rescore")
    assert BACKENDS.get("hnsw-sq8").tuning == ("ef_search", "rescore")
    assert BACKENDS.get("ivfpq").tuning == ("nprobe", "rescore")
    assert BACKENDS.get("flat").tuning == ()
    assert BACKENDS.get("milvus").tuning == ("rescore",)
    assert set(tuning_keys()) == {"ef_search", "nprobe", "rescore"}
    assert backends_tuning("nprobe") == ("ivfpq",)
    assert tuning_help("ef_search").startswith("hnsw, hnsw-sq8: beam width")
    assert "1024 for ivfpq" in tuning_help("rescore") and "256 for hnsw" in tuning_help("rescore")


@pytest.mark.parametrize("kw, word", [({"kind": "hnsw", "ef_search": 0}, "ef_search"),
                                      ({"kind": "ivfpq", "nprobe": 0}, "nprobe"),
                                      ({"kind": "ivfpq", "rescore": 0}, "rescore"),
                                      ({"kind": "auto", "hnsw_m": 0}, "hnsw_m"),
                                      ({"kind": "flat", "nprobe": 0}, "nprobe"),
                                      ({"kind": "milvus"}, "milvus_uri")])
def test_index_config_is_validated_by_the_chosen_backend(kw, word):
    with pytest.raises(ConfigError, match=word):
        IndexConfig(**kw)


def test_a_built_backend_reads_its_settings_and_retunes():
    b = BACKENDS.get("hnsw")(4, IndexConfig(kind="hnsw", ef_search=7))
    assert b.index.hnsw.efSearch == 7
    b.add(np.arange(3), np.eye(3, 4, dtype=np.float32))
    b.tune(IndexConfig(kind="hnsw", ef_search=21))
    assert b.cfg == HNSWSettings(ef_search=21) and b.index.hnsw.efSearch == 21


def test_messages_come_from_the_registry():
    assert backend_words("ivfpq") == "ivfpq (approximate: inverted lists + 4-bit PQ, shortlist re-scored exactly)"
    assert backend_words("nonesuch") == "nonesuch"
    msg = unused_tuning("flat", {"nprobe": 4})
    assert msg.startswith("--nprobe: this index uses the flat (exact search) backend")
    assert msg.endswith("(--nprobe applies to ivfpq)")


def test_a_new_backend_declares_its_tuning_in_one_place():
    @dataclass(frozen=True)
    class ToySettings(Settings):
        depth: int = setting(2, "how deep", tunable=True)
        width: int = setting(5, "how wide")

    class Toy(Backend):
        Settings = ToySettings

        def _make(self, dim, cfg):
            return None

    assert Toy.tuning == ("depth",)
    with pytest.raises(ConfigError, match="depth must be at least 1, not 0"):
        ToySettings(depth=0)
