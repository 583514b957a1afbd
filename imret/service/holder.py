"""The index a service serves, and its one way of changing it.

Readers search whatever ``Index`` the holder points at; a writer works on a clone and
swaps the reference when done. A change holds the index's OS write lock (the one
``imret add``/``remove`` take) while it reads, changes and saves, and first reloads
the index when another process saved it since this service last did: the service
never saves over another writer's work. A change is written as one record of the
index's delta log when it can be (``imret.index.delta``: only what changed), else by a
full save. Readers notice another process's save too (one ``stat`` of the index and
its log per request) and are answered from the reloaded index; while it cannot be
read, they are answered from the last one that could, and the failure is kept in
``reload_error``.
"""
from __future__ import annotations

import threading

from ..core.errors import ImretError
from ..index.delta import append_change, delta_path
from ..index.lock import DEFAULT_WAIT_S, DiskState, writer_lock
from ..index.store import Index


class IndexHolder:
    def __init__(self, index: Index, path: str, lock_wait_s: float = DEFAULT_WAIT_S):
        self._index = index
        self.path = path
        self.lock_wait_s = lock_wait_s
        self.write_lock = threading.Lock()  # writers (and reloads) of this process, in turn
        self.disk_state = self._state()
        self.reloads = 0
        self.reload_error: str | None = None
        self._failed_state = None  # the version on disk that could not be loaded (not retried)

    def _state(self):
        return DiskState.of(self.path), DiskState.of(delta_path(self.path))

    @property
    def index(self) -> Index:
        """The index as last saved, by this service or by another writer."""
        state = self._state()
        if state != self.disk_state and state != self._failed_state and self.write_lock.acquire(blocking=False):
            try:  # a writer of this process holds the lock otherwise: it reloads, then saves
                self._reload_if_changed()
            except ImretError as exc:
                self._failed_state, self.reload_error = state, str(exc)
            finally:
                self.write_lock.release()
        return self._index

    def _reload_if_changed(self) -> None:
        state = self._state()
        if state == self.disk_state:
            return
        current = self._index
        fresh = Index.load(self.path)
        fresh.set_extractor(current.extractor())
        if fresh.local is not None and current.local is not None:
            fresh.local._extractor = current.local._extractor  # the same network: not built again
        self._index = fresh
        self.disk_state = state
        self.reloads += 1
        self.reload_error = self._failed_state = None

    def update(self, change) -> Index:
        """Apply ``change(clone)`` to a clone of the index as saved now, save it, then swap it in."""
        with self.write_lock, writer_lock(self.path, self.lock_wait_s):
            self._reload_if_changed()
            old = self._index
            new = old.clone()
            change(new)
            if not append_change(self.path, old, new):
                new.save(self.path)
            self.disk_state = self._state()
            self._index = new
            return new
