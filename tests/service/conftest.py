import os

import pytest


@pytest.fixture(scope="session")
def local_index(photoset, copy_photos, tmp_path_factory):
    """(index path, photos folder, held-back originals): six photos of the photo set indexed
    with local features ('fast' configuration), ready for spatial verification."""
    from imret.index.store import Index
    from imret.local.commands import build_local
    from imret.presets import get_preset

    root = tmp_path_factory.mktemp("service-local")
    names = ("astronaut", "coffee", "chelsea", "camera", "distractor_000", "distractor_001")
    chosen = [next(p for p in photoset.db if os.path.basename(p).startswith(n + ".")) for n in names]
    photos = copy_photos(chosen, root / "photos")
    index, _ = Index.build([photos], get_preset("fast"))
    build_local(index, "fast")
    path = str(root / "local.index")
    index.save(path)
    held_back = [p for p in photoset.db if os.path.basename(p).startswith(("rocket.", "china."))]
    return path, photos, held_back
