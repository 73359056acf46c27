"""One item lifecycle, shared by `oldphoto restore`, the Ray pipeline and the Prefect flows:

    list ─▶ plan (skip what is done, on the driver) ─▶ process (the stages) ─▶ write (atomic) ─▶ record (per item)

- **List** (`list_inputs`): every file below each root (recursively, sorted). A root that is a file is taken
  as given. Below a folder, a file is an input when its suffix is an image suffix (`IMAGE_SUFFIXES`); hidden
  entries (a path part starting with '.'), keys with `..` or empty parts, symbolic links (to files or folders:
  never followed, a link may lead out of the source tree) and other files are *skipped* and listed with the
  reason (they appear in the run summary and in the catalog run's counts). Local inputs are read with
  O_NOFOLLOW (`storage.read_local`), so a file swapped for a link after the listing is refused too.
- **Name** (`output_names`): DEST/<path relative to the root, without extension>/..., so sub-folders (boxes,
  albums, accession numbers) are kept: `SOURCE/box12/old/a.png` → `DEST/box12/old/a/`. Names that cannot be
  written are made writable by a fixed rule (`safe_part`); two inputs that would share a folder
  (case-insensitively) get `-<8 hex of sha1(URI)>` appended to the last part.
- **Fingerprint** (`run_fingerprint`): the restore options except the device, the restoration revision
  (`RESTORATION_REVISION`: raised whenever a code change alters what the same options and weights compute) and
  the sha256 of every checkpoint they use. Equal fingerprint + equal input bytes = nothing to recompute, whichever
  command did it; after an upgrade that restores differently, items are restored again.
- **Plan** (`plan_items`): on the driver, from the catalog: an item whose source URI was already restored with
  this fingerprint and whose bytes are unchanged (size, then sha256) is skipped.
- **Write** (`write_item`): every file through `Storage.write_bytes` (atomic locally, whole objects on S3),
  `provenance.json` last; a write error (name too long, disk full, S3 after retries) fails that item only:
  its partial outputs are removed and a failure `provenance.json` is written where possible.
- **Record**: each item is recorded in the catalog as soon as it is written (`Recorder`).
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from oldphoto.provenance import StageName, StageStatus
from oldphoto.storage import IMAGE_SUFFIXES, SYMLINK_NOT_FOLLOWED, StorageError, normalize, open_storage, read_local

log = logging.getLogger(__name__)

MAX_PART_BYTES = 200          # longest output path part kept as is (file systems allow 255 bytes)
PROVENANCE_FILE = "provenance.json"


@dataclass
class WorkItem:
    """One input: its URI and the output folder name (NAME in DEST/NAME/...), unique within a run."""

    uri: str
    name: str


@dataclass
class SkippedInput:
    """A file found below a source root that is not an input, and why."""

    uri: str
    reason: str


@dataclass
class Listing:
    items: list[WorkItem] = field(default_factory=list)
    skipped: list[SkippedInput] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ listing
def _skip_reason(rel: str) -> str | None:
    """Why the file at `rel` (relative to its root, '/'-separated) is not an input, or None."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "unsafe name (empty, '.' or '..' path part)"
    if any(p.startswith(".") for p in parts):
        return "hidden"
    if not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return "not an image file name (suffix is not one of " + " ".join(IMAGE_SUFFIXES) + ")"
    return None


def _walk_local(root: str, exclude: str | None) -> list[str]:
    """Relative paths of every file below a local folder; symbolic links (to files or folders) are listed
    themselves and never followed (`list_inputs` skips them with the reason)."""
    found: list[str] = []
    excl = os.path.realpath(exclude) if exclude else None
    for dirpath, dirs, files in os.walk(root):
        if excl is not None:
            dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(dirpath, d)) != excl]
        rel_dir = os.path.relpath(dirpath, root)
        for f in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            found.append(f if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{f}")
    return sorted(found)


def list_inputs(roots: Sequence[str], exclude: str | None = None) -> Listing:
    """The inputs below `roots` (local paths, file:// or s3:// URIs) and the files skipped, with names
    (`output_names`) from the whole listing. `exclude`: a local folder left out entirely (the output folder
    of `oldphoto restore` when it lies inside an input folder). A root that does not exist is kept as an input
    (it fails as an item with "file not found"), except a missing S3 prefix, which is a StorageError."""
    found: list[tuple[str, str]] = []          # (uri, path relative to its root, for naming)
    listing = Listing()
    seen: set[str] = set()
    for root in roots:
        store = open_storage(root)
        uri_root = normalize(root)
        pairs = _root_files(store, uri_root, exclude)
        is_file_root = len(pairs) == 1 and pairs[0][0] == uri_root.rstrip("/")
        for uri, rel in pairs:
            if uri in seen:
                continue
            seen.add(uri)
            reason = None if is_file_root else _listing_skip_reason(store, uri, rel)
            if reason:
                listing.skipped.append(SkippedInput(uri, reason))
            else:
                found.append((uri, rel))
    names = output_names([rel for _, rel in found], [uri for uri, _ in found])
    listing.items = [WorkItem(uri, name) for (uri, _), name in zip(found, names)]
    return listing


def _root_files(store: Any, uri_root: str, exclude: str | None) -> list[tuple[str, str]]:
    """(uri, path relative to the root) of every file below one root; a root that is a file: itself."""
    if store.protocol == "file":
        if os.path.isdir(uri_root):
            return [(os.path.join(uri_root, *r.split("/")), r) for r in _walk_local(uri_root, exclude)]
        return [(uri_root, os.path.basename(uri_root))]
    base = uri_root.rstrip("/")
    return [(u, store.relative(base, u) if u != base else base.rsplit("/", 1)[-1]) for u in store.find(base)]


def _listing_skip_reason(store: Any, uri: str, rel: str) -> str | None:
    if store.protocol == "file" and os.path.islink(uri):
        return SYMLINK_NOT_FOLLOWED
    return _skip_reason(rel)


# ------------------------------------------------------------------------------------------------- naming
def _hash8(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes at a character boundary."""
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def safe_part(part: str) -> str:
    """One path part of an output name, writable on any common file system and object store:
    control characters and '\\' become '_', an empty part becomes '_', and a part longer than
    MAX_PART_BYTES (UTF-8) is cut there and gets '-' + 8 hex of sha1(the whole part) (so two long names
    that share their first 200 bytes stay apart)."""
    clean = "".join("_" if (unicodedata.category(ch) == "Cc" or ch == "\\") else ch for ch in part).strip()
    clean = clean if clean not in ("", ".", "..") else "_"
    if len(clean.encode("utf-8", "surrogateescape")) > MAX_PART_BYTES:
        clean = f"{_cut(clean, MAX_PART_BYTES)}-{_hash8(part)}"
    return clean


def _strip_suffix(rel: str) -> str:
    head, _, base = rel.rpartition("/")
    stem = base.rsplit(".", 1)[0] if "." in base[1:] else base
    return f"{head}/{stem}" if head else stem


def output_names(rels: Sequence[str], uris: Sequence[str] | None = None) -> list[str]:
    """NAME of DEST/NAME/ for each input, from its path relative to its source root ('box12/old/a.png' →
    'box12/old/a'), each part made writable by `safe_part`. Names equal case-insensitively within the run get
    '-<8 hex of sha1(URI)>' on their last part. Deterministic, so a re-run replaces the same item's outputs."""
    uris = list(uris) if uris is not None else list(rels)
    names = ["/".join(safe_part(p) for p in _strip_suffix(r.replace("\\", "/")).split("/")) for r in rels]
    counts = Counter(n.casefold() for n in names)
    return [n if counts[n.casefold()] == 1 else f"{n}-{_hash8(u)}" for n, u in zip(names, uris)]


def item_base(destination: str, name: str) -> str:
    """DEST/NAME: where an item's files go."""
    store = open_storage(destination)
    return store.join(destination, *name.split("/"))


# ------------------------------------------------------------------------------------------- fingerprint
# Raise by one in the commit that changes what the same options and weights compute (a default, a rule, a step),
# so that a re-run after an upgrade restores again instead of skipping: 1 = up to session 20; 2 = session 21
# (structure return's noise floor reaches 4 grey levels); 3 = session 22 (the detector's mirrored passes); 4 =
# session 23 (the `auto` decision counts the mirrored map; the networks run channels-last); 5 = session 24 (a
# 16-bit RGB TIFF's extra sample is alpha only where the file says so).
RESTORATION_REVISION = 5


def run_fingerprint(options: Any, models: Any) -> tuple[dict[str, Any], str]:
    """(parameters, fingerprint) of a run: the restore options except the device (it does not change what
    is computed), the restoration revision (`RESTORATION_REVISION`) and the checkpoints they use (`models`: a
    ModelSet; loads no network)."""
    from oldphoto.catalog import fingerprint

    params = {k: v for k, v in options.to_dict().items() if k != "device"}
    params["restoration_revision"] = RESTORATION_REVISION
    checkpoints = [models.checkpoint(r) for r in options.required_roles() + options.optional_roles() if models.has(r)]
    return params, fingerprint(params, checkpoints)


# -------------------------------------------------------------------------------------------------- plan
def plan_items(items: Sequence[WorkItem], catalog: Any, fingerprint: str) -> tuple[list[WorkItem], list[WorkItem]]:
    """(to do, already done): an item is done when the catalog has a done result for its source URI with
    this fingerprint and the file's bytes are the ones that result restored (same size, then same sha256).
    Runs on the driver; `catalog` None = nothing is done."""
    if catalog is None or not items:
        return list(items), []
    done = catalog.done_inputs([it.uri for it in items], fingerprint)
    todo, skipped = [], []
    for it in items:
        rec = done.get(it.uri)
        if rec is not None and _same_bytes(it.uri, *rec):
            skipped.append(it)
        else:
            todo.append(it)
    return todo, skipped


def claim_items(items: Sequence[WorkItem], catalog: Any, run_id: str | None) -> tuple[list[WorkItem], list[WorkItem]]:
    """(this run's, held by another run): the items leased to this run in the catalog (`Catalog.claim`), so
    that two runs at once compute each item once. No catalog: every item is this run's."""
    if catalog is None or not items:
        return list(items), []
    mine = with_catalog_retry(lambda: catalog.claim([(it.uri, it.name) for it in items], run_id))
    return [it for it in items if it.uri in mine], [it for it in items if it.uri not in mine]


def _same_bytes(uri: str, sha256: str | None, size: int | None) -> bool:
    try:
        store = open_storage(uri)
        if size is not None and store.size(uri) != size:
            return False
        return sha256 is not None and store.sha256(uri) == sha256
    except Exception:          # unreadable now: let the item run and fail with its reason
        return False


# -------------------------------------------------------------------------------------------------- read
def read_input(uri: str) -> tuple[bytes | None, str | None]:
    """(bytes, None), or (None, a one-line reason) when the input cannot be read; never raises."""
    store = open_storage(uri)
    if store.protocol == "file":           # never through a symbolic link, never blocking on a FIFO
        try:
            return read_local(normalize(uri)), None
        except StorageError as e:
            return None, str(e)
    try:
        return store.read_bytes(uri), None
    except StorageError:
        return None, "file not found"
    except Exception as e:  # noqa: BLE001 - after botocore's retries: this item's error, as it was
        return None, f"cannot read the file: {type(e).__name__}: {e}"


def start_item(item: WorkItem, destination: str, options: Any, run_id: str | None) -> Any:
    """Read an input into a new ItemState (a read error fails it in "load", with the reason)."""
    from oldphoto.stages.base import ItemState

    data, error = read_input(item.uri)
    state = ItemState.new(item.uri, data, options, name=item.name, out_dir=item_base(destination, item.name),
                          run_id=run_id)
    if error:
        state.fail(StageName.LOAD, error)        # before any stage ran: the item's error, no stage record
    return state


# ------------------------------------------------------------------------------------------------- write
def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno in (errno.ENAMETOOLONG, errno.ENOSPC, errno.EDQUOT, errno.EACCES,
                                                   errno.EROFS):
        return f"{os.strerror(exc.errno)} ({errno.errorcode.get(exc.errno, exc.errno)})"
    return f"{type(exc).__name__}: {exc}"


def write_item(state: Any, destination: str) -> dict[str, str]:
    """Write `state.files` under DEST/NAME/ (provenance.json last); returns relpath -> URI written.

    A write error fails the item, not the run: the files of this attempt already written are removed, the
    provenance is marked failed ("write: <reason>") and a failure provenance.json is written where possible."""
    from oldphoto.provenance import StageRecord
    from oldphoto.stages.base import add_record, now_iso

    store = open_storage(destination)
    base = item_base(destination, state.name)
    order = [k for k in state.files if k != PROVENANCE_FILE] + [k for k in state.files if k == PROVENANCE_FILE]
    written: dict[str, str] = {}
    try:
        for rel in order:
            target = store.join(base, *rel.split("/"))
            store.write_bytes(target, state.files[rel])
            written[rel] = target
        return written
    except Exception as exc:  # noqa: BLE001 - any storage error is this item's failure
        reason = _reason(exc)
    for uri in written.values():
        try:
            store.delete(uri)
        except Exception:  # noqa: BLE001
            pass
    prov = state.provenance
    # recorded even when the item had failed before: its failure provenance.json could not be written either
    add_record(state, StageRecord(name=StageName.WRITE, status=StageStatus.FAILED),
               f"cannot write outputs to {base}: {reason}", once=False)
    prov.outputs = []
    prov.finished = now_iso()
    state.files = {PROVENANCE_FILE: prov.to_json().encode("utf-8")}
    try:
        target = store.join(base, PROVENANCE_FILE)
        store.write_bytes(target, state.files[PROVENANCE_FILE])
        return {PROVENANCE_FILE: target}
    except Exception:  # noqa: BLE001 - the catalog still gets the failure
        return {}


# ------------------------------------------------------------------------------------------------ record
OUTAGE_BOUND_S = float(os.environ.get("OLDPHOTO_CATALOG_OUTAGE_S", "300"))


def with_catalog_retry(fn: Callable[[], Any], bound_s: float | None = None, what: str = "catalog",
                       on_wait: Callable[[str], None] | None = None) -> Any:
    """Call `fn`, retrying while the database cannot be reached, for up to `bound_s` seconds (default
    $OLDPHOTO_CATALOG_OUTAGE_S or 300 s), then raise the last error."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    bound = OUTAGE_BOUND_S if bound_s is None else bound_s
    deadline, delay, warned = time.monotonic() + bound, 1.0, False
    while True:
        try:
            return fn()
        except (OperationalError, DBAPIError) as exc:
            transient = isinstance(exc, OperationalError) or getattr(exc, "connection_invalidated", False)
            if not transient or time.monotonic() + delay > deadline:
                raise
            if not warned and on_wait is not None:
                on_wait(f"{what} unreachable ({str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}); "
                        f"retrying for up to {bound:.0f} s")
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


class Recorder:
    """Records each finished item in the catalog at once (one transaction per item), riding out a catalog
    outage of up to `OUTAGE_BOUND_S`."""

    def __init__(self, catalog: Any, run_id: str, warn: Callable[[str], None] | None = None) -> None:
        self.catalog, self.run_id, self.warn = catalog, run_id, warn or log.warning

    def __call__(self, provenance: Any) -> None:
        if self.catalog is None:
            return
        with_catalog_retry(lambda: self.catalog.record(provenance, self.run_id), what="catalog",
                           on_wait=self.warn)


class Heartbeat:
    """While open, a daemon thread tells the catalog every HEARTBEAT_S that the run's driver is alive
    (a run that stops beating is closed as aborted by the next run: `Catalog.close_dead_runs`)."""

    def __init__(self, catalog: Any, run_id: str | None) -> None:
        import threading

        self.catalog, self.run_id = catalog, run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="oldphoto-heartbeat", daemon=True)

    def _beat(self) -> None:
        from oldphoto.catalog.store import HEARTBEAT_S

        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.catalog.heartbeat(self.run_id)
            except Exception as e:  # noqa: BLE001 - an outage must not stop the run
                log.debug("heartbeat failed: %s", e)

    def __enter__(self) -> "Heartbeat":
        if self.catalog is not None and self.run_id:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()


__all__ = ["WorkItem", "SkippedInput", "Listing", "list_inputs", "output_names", "safe_part", "item_base",
           "RESTORATION_REVISION", "run_fingerprint", "plan_items", "claim_items", "read_input", "start_item", "write_item", "Recorder", "Heartbeat", "with_catalog_retry", "MAX_PART_BYTES"]
