"""Checks around an index's writes: nothing lost, nothing half-committed.

The global part (``INDEX``) and the local part (``INDEX.local.h5``) of an index commit
as one, with the index file as the commit point: ``save`` writes the local part in full
as ``INDEX.local.h5.next`` (tagged with a new generation), then renames the index file,
whose header names that generation, into place, then renames the ``.next`` file over the
local part. A writer killed before the index rename leaves the old pair (and a stale
``.next`` the next save overwrites); killed after it, the index names a generation that
only the ``.next`` file holds, and ``adopt_committed_local`` finishes the rename when the
index is next loaded. Files saved before generations were recorded (or a local part
restored by hand) can still disagree with their index; image ids are never reused, so
the id sets alone tell what is wrong: ``reconcile_local`` drops the extra entries as the
index is loaded (so every later save repairs the file), and ``repair_local`` re-extracts
the missing ones (from the killed run's local journal when it is still there).
"""
from __future__ import annotations

import os

from ..core.atomic import file_mode, fsync_folder
from ..errors import IndexFileError


def pending_local_path(local_file: str) -> str:
    """Where a save writes the local part before its index file commits it."""
    return local_file + ".next"


def promote_local(local_file: str) -> None:
    """Rename the committed ``.next`` local part over ``local_file`` (keeping that file's mode)."""
    pending = pending_local_path(local_file)
    try:
        os.chmod(pending, file_mode(local_file))
        os.replace(pending, local_file)
    except FileNotFoundError:
        return  # another process (a reader loading the index) finished the rename first
    fsync_folder(os.path.dirname(os.path.abspath(local_file)))


def adopt_committed_local(local_file: str, generation: str) -> None:
    """Finish a save killed between its index rename and its local rename: when the index
    names ``generation`` and only the ``.next`` file holds it, that file is the local part.
    A ``.next`` of another generation is left alone (a writer may be saving it now)."""
    from ..local.store import file_generation

    pending = pending_local_path(local_file)
    if not generation or not os.path.exists(pending) or file_generation(local_file) == generation:
        return
    if file_generation(pending) == generation:
        promote_local(local_file)


def check_loaded(index, path) -> None:
    """What a freshly loaded index must satisfy beyond its checksums: ids unique and below
    ``next_id`` (else the next ``add`` would hand out ids again); then ``reconcile_local``."""
    ids = index.ids
    if len(ids) and (int(ids.max()) >= index.next_id or len(set(ids.tolist())) != len(ids)):
        raise IndexFileError(path, f"inconsistent index content (next id {index.next_id}, largest id "
                                   f"{int(ids.max())}, {len(ids)} ids)")
    reconcile_local(index)


def reconcile_local(index) -> list[int]:
    """Drop local entries whose image is not in ``index``; returns the ids of images that lack
    local features (kept as ``index.local_missing``)."""
    index.local_missing = []
    if index.local is None:
        return []
    have, ids = set(index.local.ids), set(int(i) for i in index.ids)
    extra = sorted(have - ids)
    if extra:
        index.local.remove(extra)
    index.local_missing = sorted(ids - have)
    index.local_dropped = extra
    return index.local_missing


def repair_local(index, journal_path: str | None, progress: bool = False, on_error=None) -> int:
    """Extract the local features of the images of ``index`` that lack them (journaled and
    resumable like ``add``); returns how many images were repaired."""
    missing = getattr(index, "local_missing", [])
    if index.local is None or not missing:
        return 0
    paths = [index.path_of(i) for i in missing]
    done = index.local.add(paths, missing, progress=progress, on_error=on_error,
                           journal_path=index.local_journal_path(journal_path),
                           journal_header={"mode": "add", "created": index.created})
    index.local_missing = sorted(set(missing) - set(done))
    return len(done)


def needs_save(index) -> bool:
    """Whether loading ``index`` repaired something that only a save makes permanent."""
    return bool(getattr(index, "local_dropped", []))


def discard_finished_journal(index, journal_path: str) -> bool:
    """Delete the journals of an ``add`` that finished (every image it journaled is in
    ``index``) but was killed before deleting them: they are no unfinished run, and a
    later ``add`` of other photos must not be told that they used other settings."""
    from .journal import RecordJournal

    if not os.path.exists(journal_path):
        return False
    paths = RecordJournal.paths_in(journal_path)
    if paths is None or any(p not in index._pos_of for p in paths):
        return False
    if getattr(index, "local_missing", []):
        return False  # the local journal may still hold what repair_local needs
    index.finish_journal(journal_path)
    return True


def refuse_empty(report, out: str | os.PathLike, sources) -> None:
    """An index of no images is never written (it would replace one that holds some)."""
    if report.indexed:
        return
    out = os.fspath(out)
    why = "no images found" if not report.skipped else f"no image could be read ({len(report.skipped)} skipped)"
    kept = "the index there is unchanged" if os.path.exists(out) else "nothing written"
    raise IndexFileError(out, f"{why} in {', '.join(map(str, sources))}; {kept}")


def add_exit_code(report) -> int:
    """0 when ``add`` added something or everything was already there; 1 when every file
    failed, or none was found."""
    if report.indexed:
        return 0
    return 0 if report.already and not report.skipped else 1


def tsv_field(text: str) -> str:
    """``text`` safe in one TSV field: backslash, TAB, newline and carriage return escaped
    (as ``\\\\``, ``\\t``, ``\\n``, ``\\r``), so a file name cannot split a line or a column."""
    return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r"))
