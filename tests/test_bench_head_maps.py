"""The benchmarks' map caches are named by the photos' bytes, not only their names."""
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from head_maps import files_digest  # noqa: E402


def test_files_digest_follows_the_bytes_and_their_order_not_the_folder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "1.jpg").write_bytes(b"first photo")
    (a / "2.jpg").write_bytes(b"second photo")
    shutil.copytree(a, b)
    same = files_digest([a / "1.jpg", a / "2.jpg"])
    assert files_digest([b / "1.jpg", b / "2.jpg"]) == same  # a copy elsewhere reuses its maps
    assert files_digest([a / "2.jpg", a / "1.jpg"]) != same
    (b / "2.jpg").write_bytes(b"second photX")  # same name, same size, other photo
    assert files_digest([b / "1.jpg", b / "2.jpg"]) != same
