"""Atomic install of a rendered tree: build the whole tree aside, then swap it in.

:func:`install` puts every rendered file, boot loader and OS image the hosts need into a tree beside
the root, and only then swaps it with the live tree in one ``renameat2(RENAME_EXCHANGE)`` (two
renames where the kernel lacks it): a reader sees the whole old tree or the whole new one, never a
missing or half-written one. A failure at any point before the swap leaves the live tree exactly as it
was.

The tree replaced is kept beside the root as ``.ROOT.spare``, and the next install builds its new tree
by bringing that spare up to date instead of starting from nothing: files whose content did not change
are kept, files the live tree has identical are hard-linked from it, only the others are written (to a
temporary name, then renamed over), and what is no longer wanted is removed. ``.manifest.json`` in each
tree records the digest and mtime of every file it holds, so no file is read back to compare; a spare
whose manifest is missing (a sync that died) is thrown away and the tree is built afresh. On this
machine's disk a new file or directory costs ~0.5-1 ms and a link or rename ~25 us: a steady-state
install of 10,000 hosts creates almost nothing.

``var/`` (dnsmasq's log, leases and PID file, the HTTP access log) belongs to the running servers,
not to a render: it is carried over into the new tree (a directory rename, so open log files keep
working).

Boot loaders and images come from the system (:class:`BootSources`); a file the hosts need and
that is missing is a :class:`~pxe.errors.MissingBootFile` naming the path and the package that
provides it, raised before anything is written.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .context import GRUB_DIR
from .errors import InstallError, MissingBootFile
from .render import RenderedTree

__all__ = ["DEBIAN_12_NETBOOT", "MANIFEST", "BootSources", "InstallReport", "install"]

#: Debian's netboot files as the ``debian-installer-12-netboot-amd64`` package installs them.
DEBIAN_12_NETBOOT = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")

#: What a tree holds: digest and mtime of each rendered file, size and mtime of each copied one.
MANIFEST = ".manifest.json"
_MANIFEST_VERSION = 2
_KERNEL_NAMES = ("vmlinuz", "linux", "bzImage")
_INITRD_NAMES = ("initrd", "initrd.gz", "initrd.img")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class BootSources:
    """Where boot loaders and OS images are taken from. Every path may be changed.

    ``images`` maps an OS name to a directory holding its kernel (``vmlinuz``, ``linux`` or
    ``bzImage``) and initrd (``initrd``, ``initrd.gz`` or ``initrd.img``); an OS not listed there
    is looked up as ``image_dir/OS/``. For Ubuntu an ``install.iso`` there is copied too.
    ``extra_images`` maps a path under ``images/`` (a host's ``extra_initrds``, e.g.
    ``firmware/firmware.cpio.gz``) to the file to install there.
    ``grub_dir`` holds Debian's signed ``bootnetx64.efi`` (shim), ``grubx64.efi`` and ``grub/``.
    """

    undionly: Path = Path("/usr/lib/ipxe/undionly.kpxe")
    snponly: Path = Path("/usr/lib/ipxe/snponly.efi")
    ipxe_efi: Path | None = Path("/usr/lib/ipxe/ipxe.efi")
    pxelinux: Path = Path("/usr/lib/PXELINUX/pxelinux.0")
    ldlinux: Path = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
    grub_dir: Path = DEBIAN_12_NETBOOT
    images: Mapping[str, Path] = field(default_factory=lambda: {"debian-12": DEBIAN_12_NETBOOT})
    image_dir: Path | None = None
    extra_images: Mapping[str, Path] = field(default_factory=dict)

    def loader_files(self, loaders: frozenset[str]) -> list[tuple[Path, str, str]]:
        """(source, tree path, package) for every loader file the given loaders need."""
        files: list[tuple[Path, str, str]] = []
        if "ipxe" in loaders:
            files += [(self.undionly, "tftp/undionly.kpxe", "ipxe"), (self.snponly, "tftp/snponly.efi", "ipxe")]
        if "pxelinux" in loaders:
            files += [(self.pxelinux, "tftp/pxelinux.0", "pxelinux"),
                      (self.ldlinux, "tftp/ldlinux.c32", "syslinux-common")]
        if "grub" in loaders:
            grub_base = PurePosixPath(GRUB_DIR).parent
            pkg = "debian-installer-12-netboot-amd64"
            # Debian's shim (bootnetx64.efi) asks TFTP for grubx64.efi at the TFTP root, not beside itself.
            files += [(self.grub_dir / "bootnetx64.efi", f"{grub_base}/bootnetx64.efi", pkg),
                      (self.grub_dir / "grubx64.efi", f"{grub_base}/grubx64.efi", pkg),
                      (self.grub_dir / "grubx64.efi", "tftp/grubx64.efi", pkg)]
            modules = self.grub_dir / "grub"
            if not modules.is_dir():
                raise MissingBootFile(f"GRUB's module directory {modules} is missing (install {pkg}, or set the "
                                      "GRUB directory)", path=str(modules))
            for path in sorted(modules.rglob("*")):
                rel = path.relative_to(modules).as_posix()
                if path.is_file() and rel != "grub.cfg":  # ours replaces Debian's menu
                    files.append((path, f"{GRUB_DIR}/{rel}", pkg))
        return files

    def image_files(self, os_name: str) -> list[tuple[Path, str]]:
        """(source, tree path) of one OS's kernel and initrd, in ``tftp/images/OS/`` (``http/`` links to them)."""
        where = self.images.get(os_name) or (self.image_dir / os_name if self.image_dir else None)
        if where is None:
            raise MissingBootFile(f"no image directory for {os_name}: give one (--images DIR, with DIR/{os_name}/"
                                  "vmlinuz and initrd)", path=None)
        kernel = next((where / n for n in _KERNEL_NAMES if (where / n).is_file()), None)
        initrd = next((where / n for n in _INITRD_NAMES if (where / n).is_file()), None)
        if kernel is None or initrd is None:
            missing = f"kernel ({', '.join(_KERNEL_NAMES)})" if kernel is None else \
                f"initrd ({', '.join(_INITRD_NAMES)})"
            hint = " (install debian-installer-12-netboot-amd64)" if where == DEBIAN_12_NETBOOT else ""
            raise MissingBootFile(f"{os_name}: no {missing} in {where}{hint}", path=str(where))
        files = [(kernel, f"tftp/images/{os_name}/vmlinuz"), (initrd, f"tftp/images/{os_name}/initrd")]
        iso = where / "install.iso"
        if iso.is_file():
            files.append((iso, f"tftp/images/{os_name}/install.iso"))
        return files


@dataclass(frozen=True)
class InstallReport:
    """What :func:`install` did, by file: rendered files ``written``, ``reused`` (hard-linked from the live
    tree) or ``kept`` (already right in the spare); loader and image files ``copied`` or ``linked``;
    files ``removed`` from the spare; bytes written; seconds until the new tree was live; ``mode``
    ``fresh`` (built from nothing) or ``sync`` (the spare brought up to date)."""

    root: Path
    written: int
    reused: int
    copied: int
    linked: int
    bytes_written: int
    seconds: float
    kept: int = 0
    removed: int = 0
    mode: str = "fresh"

    def to_json(self) -> dict[str, object]:
        return {"root": str(self.root), "mode": self.mode, "written": self.written, "reused": self.reused,
                "kept": self.kept, "copied": self.copied, "linked": self.linked, "removed": self.removed,
                "bytes_written": self.bytes_written, "seconds": round(self.seconds, 3)}


# A relative path of plain segments: no empty, '.' or '..' segment, no backslash, no control character.
_SEGMENT = r"(?!\.\.?(?:/|\Z))[A-Za-z0-9_.:+@=,-]+"
_SAFE_REL = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})*\Z")


def _safe_rel(path: str) -> str:
    if not _SAFE_REL.match(path):
        raise InstallError(f"refusing to write outside the tree: {path!r}")
    return path


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically. False if the system cannot (then the caller renames twice)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


@contextmanager
def _lock(root: Path) -> Iterator[None]:
    """One install at a time per root (a lock file beside it)."""
    lock_path = root.parent / f".{root.name}.lock"
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _load_manifest(root: Path | None) -> dict[str, dict[str, list[Any]]] | None:
    """A tree's ``.manifest.json`` ({"files": {path: [digest, mtime_ns]}, "copies": {path: [size, mtime_ns]}}),
    or None when it has none or an unreadable one."""
    if root is None:
        return None
    try:
        doc = json.loads((root / MANIFEST).read_bytes())
        if doc.get("version") == _MANIFEST_VERSION and isinstance(doc["files"], dict) \
                and isinstance(doc["copies"], dict):
            return {"files": doc["files"], "copies": doc["copies"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


class _Writer:
    """Puts files into ``base``: a fresh directory, or the spare (``existing`` is its manifest)."""

    def __init__(self, base: Path, live: Path | None, existing: dict[str, dict[str, list[Any]]] | None) -> None:
        self.base = str(base)
        self.live = str(live) if live is not None else None
        self.live_manifest = _load_manifest(live) or {"files": {}, "copies": {}}
        self.sync = existing is not None
        self.existing = existing or {"files": {}, "copies": {}}
        self.files: dict[str, list[Any]] = {}
        self.copies: dict[str, list[Any]] = {}
        self.dirs: set[str] = set()
        if self.sync:  # the spare's directories exist: no mkdir for them
            for rel in (*self.existing["files"], *self.existing["copies"]):
                parent = rel.rpartition("/")[0]
                while parent and parent not in self.dirs:
                    self.dirs.add(parent)
                    parent = parent.rpartition("/")[0]
        self.written = self.reused = self.kept = self.copied = self.linked = self.removed = self.bytes = 0

    def _parent(self, rel: str) -> str:
        parent = rel.rpartition("/")[0]
        if parent and parent not in self.dirs:
            os.makedirs(f"{self.base}/{parent}", exist_ok=True)
            while parent and parent not in self.dirs:  # every ancestor now exists too
                self.dirs.add(parent)
                parent = parent.rpartition("/")[0]
        return f"{self.base}/{rel}"

    @staticmethod
    def _same(path: str, size: int, mtime_ns: int, mode: int | None = None) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        return st.st_size == size and st.st_mtime_ns == mtime_ns and (mode is None or st.st_mode & 0o777 == mode)

    def _place(self, target: str, make: Any) -> None:
        """Create ``target`` with ``make(path)``: directly in a fresh tree, via a temporary name and a
        rename over the old file in the spare."""
        if not self.sync:
            make(target)
            return
        tmp = f"{target}.rf-tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        make(tmp)
        os.replace(tmp, target)

    def put(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        """A rendered file: kept if the spare has it, linked if the live tree has it, else written."""
        target = self._parent(_safe_rel(rel))
        digest = _digest(data)
        known = self.existing["files"].get(rel)
        if known and known[0] == digest and self._same(target, len(data), known[1], mode):
            self.files[rel] = known
            self.kept += 1
            return
        live = self.live_manifest["files"].get(rel)
        if live and live[0] == digest and self.live and self._same(f"{self.live}/{rel}", len(data), live[1], mode):
            self._place(target, lambda path: os.link(f"{self.live}/{rel}", path))
            self.files[rel] = live
            self.reused += 1
            return

        def write(path: str) -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                self.files[rel] = [digest, os.fstat(fd).st_mtime_ns]
            finally:
                os.close(fd)

        self._place(target, write)
        self.written += 1
        self.bytes += len(data)

    def copy(self, src: Path, rel: str) -> None:
        """A loader or image file (its mtime kept): kept, linked from the live tree, or copied."""
        target = self._parent(_safe_rel(rel))
        st = src.stat()
        meta = [st.st_size, st.st_mtime_ns]
        self.copies[rel] = meta
        if self.existing["copies"].get(rel) == meta and self._same(target, *meta):
            self.kept += 1
            return
        if self.live_manifest["copies"].get(rel) == meta and self.live and self._same(f"{self.live}/{rel}", *meta):
            self._place(target, lambda path: os.link(f"{self.live}/{rel}", path))
            self.linked += 1
            return

        def copy(path: str) -> None:
            shutil.copyfile(src, path)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.chmod(path, 0o644)

        self._place(target, copy)
        self.copied += 1

    def link(self, existing_rel: str, rel: str) -> None:
        """A second name for a file of this tree (the HTTP side of an image)."""
        target = self._parent(_safe_rel(rel))
        meta = self.copies[existing_rel]
        self.copies[rel] = meta
        if self.existing["copies"].get(rel) == meta and os.path.exists(target) and os.path.samefile(
                target, f"{self.base}/{existing_rel}"):
            self.kept += 1
            return
        self._place(target, lambda path: os.link(f"{self.base}/{existing_rel}", path))
        self.linked += 1

    def remove_stale(self) -> None:
        """In the spare: remove what the new tree does not hold, then the directories left empty."""
        wanted = self.files.keys() | self.copies.keys()
        parents: set[str] = set()
        for rel in (*self.existing["files"], *self.existing["copies"]):
            if rel in wanted or rel == MANIFEST:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.base}/{rel}")
                self.removed += 1
            parent = rel.rpartition("/")[0]
            while parent:
                parents.add(parent)
                parent = parent.rpartition("/")[0]
        for parent in sorted(parents, key=lambda p: p.count("/"), reverse=True):
            with contextlib.suppress(OSError):  # not empty: still in use
                os.rmdir(f"{self.base}/{parent}")

    def manifest(self) -> bytes:
        return json.dumps({"version": _MANIFEST_VERSION, "files": self.files, "copies": self.copies},
                          sort_keys=True, separators=(",", ":")).encode()


def install(rendered: RenderedTree, sources: BootSources | None = None) -> InstallReport:
    """Install ``rendered`` at ``rendered.root``, atomically. Returns what was done.

    Checks every source file first (:class:`~pxe.errors.MissingBootFile`); then builds the new tree
    beside the root (from the spare when there is a good one) and swaps it in; the tree replaced
    becomes the spare. On failure the live tree is intact and :class:`~pxe.errors.InstallError` is raised.
    """
    sources = sources or BootSources()
    started = time.perf_counter()
    root = Path(rendered.root)
    copies: list[tuple[Path, str]] = []
    for src, rel, package in sources.loader_files(rendered.loaders):
        if not src.is_file():
            raise MissingBootFile(f"boot loader {src} is missing (install the {package} package, or give its path)",
                                  path=str(src))
        copies.append((src, rel))
    if "ipxe" in rendered.loaders and sources.ipxe_efi is not None and sources.ipxe_efi.is_file():
        copies.append((sources.ipxe_efi, "tftp/ipxe.efi"))
    images: list[tuple[Path, str]] = []
    for os_name in rendered.oses:
        images += sources.image_files(os_name)
    for rel in rendered.extra_images:
        src = sources.extra_images.get(rel)
        if src is None or not Path(src).is_file():
            raise MissingBootFile(f"extra initrd images/{rel}: no file given for it" if src is None else
                                  f"extra initrd images/{rel}: {src} does not exist", path=str(src) if src else None)
        images.append((Path(src), f"tftp/images/{rel}"))
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InstallError(f"cannot create {root.parent}: {exc.strerror or exc}") from exc
    with _lock(root):
        _remove_leftovers(root)
        spare = root.parent / f".{root.name}.spare"
        existing = _load_manifest(spare) if spare.is_dir() else None
        if existing is None and spare.exists():
            shutil.rmtree(spare)  # a sync that died, or an older layout: not to be trusted
        if existing is not None:
            stage = spare
            os.unlink(spare / MANIFEST)  # from here on the spare is being changed: no manifest until done
        else:
            stage = root.parent / f".{root.name}.new-{os.getpid()}"
        live = root if root.is_dir() else None
        writer = _Writer(stage, live, existing)
        try:
            if existing is None:
                stage.mkdir(mode=0o755)
            for rel, data in rendered.files.items():
                writer.put(rel, data, 0o600 if rel == "hosts.json" else 0o644)
            for src, rel in copies + images:
                writer.copy(src, rel)
            for _src, rel in images:  # the HTTP server serves the same images (iPXE fetches them over HTTP)
                writer.link(rel, "http/" + rel.removeprefix("tftp/"))
            writer.remove_stale()
            manifest = writer.manifest()
            with open(stage / MANIFEST, "xb") as fh:  # the last file: the tree is complete once it exists
                fh.write(manifest)
            swapped = _swap(stage, root)
        except BaseException as exc:
            shutil.rmtree(stage, ignore_errors=True)
            if isinstance(exc, OSError) and not isinstance(exc, InstallError):
                raise InstallError(f"installing {root} failed, the old tree is intact: "
                                   f"{exc.strerror or exc}: {exc.filename or ''}") from exc
            raise
        if swapped and stage != spare:  # the tree replaced sits at the stage's path: it is the next spare
            os.rename(stage, spare)
    return InstallReport(root=root, written=writer.written, reused=writer.reused, copied=writer.copied,
                         linked=writer.linked, bytes_written=writer.bytes, seconds=time.perf_counter() - started,
                         kept=writer.kept, removed=writer.removed, mode="sync" if existing is not None else "fresh")


def _remove_leftovers(root: Path) -> None:
    """Trees a crashed install left behind (never the live tree or the spare)."""
    for pattern in (f".{root.name}.old-*", f".{root.name}.new-*"):
        for old in root.parent.glob(pattern):
            shutil.rmtree(old, ignore_errors=True)


def _swap(stage: Path, root: Path) -> bool:
    """Put ``stage`` at ``root``, carrying ``root/var`` over. True if there was an old tree (now at ``stage``)."""
    old_var = root / "var"
    if not root.exists():
        (stage / "var").mkdir(mode=0o755)
        os.rename(stage, root)
        return False
    if old_var.is_dir():
        os.rename(old_var, stage / "var")
    else:
        (stage / "var").mkdir(mode=0o755)
    try:
        if not _exchange(stage, root):
            aside = root.parent / f".{root.name}.old-{os.getpid()}"
            os.rename(root, aside)
            try:
                os.rename(stage, root)
            except BaseException:
                os.rename(aside, root)
                raise
            os.rename(aside, stage)
    except BaseException:
        if (stage / "var").is_dir() and not old_var.exists():
            os.rename(stage / "var", old_var)  # give the old tree its var/ back
        raise
    return True
