"""The package's checksummed weights files: one writer and one reader serve the trained
heads, the tuned backbone stages and the trained keypoint attention."""
import pytest
import torch

from imret.core.digest import weights_digest
from imret.errors import WeightsError
from imret.io.torchfile import load_weights_file, save_weights_file

FMT = "imret-test/1"


def read(path, **kw):
    return load_weights_file(path, FMT, "test weights", "imret test file", "not a test file", **kw)


def test_written_file_reads_back_in_half_precision_with_its_digest(tmp_path):
    state = {"w": torch.tensor([[1.0, 0.1]]), "n": torch.tensor([3])}
    stored, digest = save_weights_file(tmp_path / "a.pt", FMT, state, {"note": "x"})
    assert stored["w"].dtype == torch.float16 and stored["n"].dtype == torch.int64  # integers stay integers
    obj = read(tmp_path / "a.pt", required=("note",))
    assert obj["note"] == "x" and obj["digest"] == digest == weights_digest(stored)
    assert torch.equal(obj["state"]["w"], torch.tensor([[1.0, 0.1]]).half())
    _, full = save_weights_file(tmp_path / "b.pt", FMT, state, {}, half=False)
    assert read(tmp_path / "b.pt")["state"]["w"].dtype == torch.float32 and full != digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]  # no temporary left behind


@pytest.mark.parametrize("content, reason", [
    ({"format": "other/1", "state": {}}, "not a test file"),
    ([1, 2], "not a test file"),
    ({"format": FMT, "digest": "0"}, "damaged imret test file: no state in it"),
    ({"format": FMT, "state": [torch.zeros(1)], "digest": "0"}, "damaged imret test file: no state of tensors in it"),
    ({"format": FMT, "state": {"w": torch.zeros(1)}}, "damaged imret test file: no digest of its weights in it"),
    ({"format": FMT, "state": {"w": torch.zeros(1)}, "digest": "0"},
     r"weights do not match their digest \(file altered or damaged\)"),
])
def test_foreign_and_damaged_files_are_refused_with_their_reason(tmp_path, content, reason):
    torch.save(content, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=rf"bad\.pt: {reason}$"):
        read(tmp_path / "bad.pt")


def test_a_required_field_and_the_optional_digest(tmp_path):
    state = {"w": torch.ones(2)}
    torch.save({"format": FMT, "state": state, "digest": weights_digest(state)}, tmp_path / "f.pt")
    with pytest.raises(WeightsError, match=r"f\.pt: damaged imret test file: no note in it$"):
        read(tmp_path / "f.pt", required=("note",))
    torch.save({"format": FMT, "state": state}, tmp_path / "old.pt")
    assert torch.equal(read(tmp_path / "old.pt", digest_required=False)["state"]["w"], state["w"])
    torch.save({"format": FMT, "state": {"w": torch.zeros(2)}, "digest": weights_digest(state)}, tmp_path / "alt.pt")
    with pytest.raises(WeightsError, match="digest"):  # an optional digest is still checked when present
        read(tmp_path / "alt.pt", digest_required=False)
