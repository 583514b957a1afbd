"""The index a service serves, and its one way of changing it.

Readers search whatever ``Index`` the holder points at; a writer works on a clone and
swaps the reference when done. A change holds the index's OS write lock (the one
``imret add``/``remove`` take) while it reads, changes and saves, and first reloads
the index when another process saved it since this service last did: the service
never saves over another writer's work.
"""
from __future__ import annotations

import threading

from ..index.lock import DEFAULT_WAIT_S, DiskState, writer_lock
from ..index.store import Index


class IndexHolder:
    def __init__(self, index: Index, path: str, lock_wait_s: float = DEFAULT_WAIT_S):
        self.index = index
        self.path = path
        self.lock_wait_s = lock_wait_s
        self.write_lock = threading.Lock()  # writers of this process, in turn
        self.disk_state = DiskState.of(path)
        self.reloads = 0

    def _reload_if_changed(self) -> None:
        if DiskState.of(self.path) == self.disk_state:
            return
        fresh = Index.load(self.path)
        fresh.set_extractor(self.index.extractor())
        if fresh.local is not None and self.index.local is not None:
            fresh.local._extractor = self.index.local._extractor  # the same network: not built again
        self.index = fresh
        self.disk_state = DiskState.of(self.path)
        self.reloads += 1

    def update(self, change) -> Index:
        """Apply ``change(clone)`` to a clone of the index as saved now, save it, then swap it in."""
        with self.write_lock, writer_lock(self.path, self.lock_wait_s):
            self._reload_if_changed()
            new = self.index.clone()
            change(new)
            new.save(self.path)
            self.disk_state = DiskState.of(self.path)
            self.index = new
            return new
