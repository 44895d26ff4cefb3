"""Atomic install of a rendered tree: write the whole tree aside, then swap it in.

:func:`install` writes every rendered file, copies the boot loaders and OS images the hosts need,
and only then puts the new tree in place of the old one with one ``renameat2(RENAME_EXCHANGE)``
(two renames where the kernel lacks it). A failure at any point before the swap removes the new
tree and leaves the old one exactly as it was. The old tree, set aside as ``.ROOT.old-*``, is
removed by a background thread (the interpreter waits for it at exit; :meth:`InstallReport.wait`
waits for it now); the next install finishes any removal a crash left undone.

``var/`` (dnsmasq's log, leases and PID file, the HTTP access log) belongs to the running servers,
not to a render: it is carried over into the new tree (a directory rename, so open log files keep
working).

Boot loaders and images come from the system (:class:`BootSources`); a file the hosts need and
that is missing is a :class:`~pxe.errors.MissingBootFile` naming the path and the package that
provides it, raised before anything is written. Copies keep the source's mtime, and ``.manifest.json``
keeps a digest of each rendered file, so the next install hard-links every unchanged file from the
previous tree instead of writing it again (on this machine's disk a new file costs ~40 times a link).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
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

#: Digests of the rendered files, so the next install can hard-link the unchanged ones.
MANIFEST = ".manifest.json"
_KERNEL_NAMES = ("vmlinuz", "linux", "bzImage")
_INITRD_NAMES = ("initrd", "initrd.gz", "initrd.img")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_cleanups: list[threading.Thread] = []
_cleanup_lock = threading.Lock()


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
    """What :func:`install` did: rendered files written, and reused (hard-linked from the previous tree
    as their content had not changed); loader and image files copied, and hard-linked; bytes written;
    seconds until the new tree was in place. The previous tree is removed in the background (:meth:`wait`)."""

    root: Path
    written: int
    reused: int
    copied: int
    linked: int
    bytes_written: int
    seconds: float
    cleanup: threading.Thread | None = field(default=None, repr=False, compare=False)

    def wait(self) -> None:
        """Wait until the previous tree has been removed."""
        if self.cleanup is not None:
            self.cleanup.join()

    def to_json(self) -> dict[str, object]:
        return {"root": str(self.root), "written": self.written, "reused": self.reused, "copied": self.copied,
                "linked": self.linked,
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


def _load_manifest(root: Path | None) -> dict[str, list[Any]]:
    """The previous tree's ``.manifest.json`` (path -> [digest, mtime_ns] of each rendered file), or nothing."""
    if root is None:
        return {}
    try:
        doc = json.loads((root / MANIFEST).read_text())
        files = doc["files"]
        return files if doc.get("version") == 1 and isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


class _Writer:
    def __init__(self, base: Path, previous: Path | None) -> None:
        self.base = base
        self.previous = previous
        self.manifest = _load_manifest(previous)
        self.digests: dict[str, list[Any]] = {}
        self.dirs: set[str] = set()
        self.written = self.reused = self.copied = self.linked = self.bytes = 0

    def _parent(self, rel: str) -> str:
        parent = rel.rpartition("/")[0]
        if parent and parent not in self.dirs:
            os.makedirs(f"{self.base}/{parent}", exist_ok=True)
            # Every ancestor now exists too.
            while parent and parent not in self.dirs:
                self.dirs.add(parent)
                parent = parent.rpartition("/")[0]
        return f"{self.base}/{rel}"

    def write(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        """Write a rendered file, or hard-link the previous tree's copy when its content is the same
        (a new inode costs far more than a link on some file systems; the tree is never edited in place)."""
        target = self._parent(_safe_rel(rel))
        digest = _digest(data)
        known = self.manifest.get(rel)
        if known and known[0] == digest and self.previous is not None:
            old = f"{self.previous}/{rel}"
            try:
                st = os.stat(old)
                # Same size, mode and mtime as when written: nobody edited it in place since.
                if st.st_size == len(data) and st.st_mode & 0o777 == mode and st.st_mtime_ns == known[1]:
                    os.link(old, target)
                    self.digests[rel] = known
                    self.reused += 1
                    return
            except OSError:
                pass
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            self.digests[rel] = [digest, os.fstat(fd).st_mtime_ns]
        finally:
            os.close(fd)
        self.written += 1
        self.bytes += len(data)

    def copy(self, src: Path, rel: str) -> None:
        """Copy ``src`` (keeping its mtime), or hard-link the previous tree's identical copy."""
        target = self._parent(_safe_rel(rel))
        st = src.stat()
        if self.previous is not None:
            old = self.previous / rel
            try:
                ost = old.stat()
                if ost.st_size == st.st_size and ost.st_mtime_ns == st.st_mtime_ns:
                    os.link(old, target)
                    self.linked += 1
                    return
            except OSError:
                pass
        shutil.copyfile(src, target)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(target, 0o644)
        self.copied += 1

    def link(self, existing_rel: str, rel: str) -> None:
        os.link(self.base / existing_rel, self._parent(_safe_rel(rel)))
        self.linked += 1


def install(rendered: RenderedTree, sources: BootSources | None = None) -> InstallReport:
    """Install ``rendered`` at ``rendered.root``, atomically. Returns what was done.

    Checks every source file first (:class:`~pxe.errors.MissingBootFile`); then writes the new
    tree beside the root, swaps it in, and removes the old one. On failure the old tree is intact
    and :class:`~pxe.errors.InstallError` is raised.
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
        _remove_old_trees(root)
        stage = root.parent / f".{root.name}.new-{os.getpid()}"
        if stage.exists():
            shutil.rmtree(stage)
        previous = root if root.is_dir() else None
        writer = _Writer(stage, previous)
        try:
            stage.mkdir(mode=0o755)
            for rel, data in rendered.files.items():
                writer.write(rel, data, 0o600 if rel == "hosts.json" else 0o644)
            manifest = json.dumps({"version": 1, "files": writer.digests}, sort_keys=True).encode()
            writer.write(MANIFEST, manifest, 0o644)
            for src, rel in copies + images:
                writer.copy(src, rel)
            for _src, rel in images:  # the HTTP server serves the same images (iPXE fetches them over HTTP)
                writer.link(rel, "http/" + rel.removeprefix("tftp/"))
            swapped = _swap(stage, root)
        except BaseException as exc:
            shutil.rmtree(stage, ignore_errors=True)
            if isinstance(exc, OSError) and not isinstance(exc, InstallError):
                raise InstallError(f"installing {root} failed, the old tree is intact: "
                                   f"{exc.strerror or exc}: {exc.filename or ''}") from exc
            raise
        seconds = time.perf_counter() - started
        cleanup = None
        if swapped:  # the old tree now sits at the stage's path: set it aside and remove it in the background
            old = root.parent / f".{root.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.rename(stage, old)
            cleanup = threading.Thread(target=shutil.rmtree, args=(old,), kwargs={"ignore_errors": True},
                                       name=f"pxe-cleanup-{root.name}")
            with _cleanup_lock:
                _cleanups.append(cleanup)
            cleanup.start()  # not a daemon: the interpreter waits for it at exit
    return InstallReport(root=root, written=writer.written, reused=writer.reused, copied=writer.copied,
                         linked=writer.linked, bytes_written=writer.bytes, seconds=seconds, cleanup=cleanup)


def _remove_old_trees(root: Path) -> None:
    """Finish removing earlier trees: wait for this process's cleanups, remove a crashed run's leftovers."""
    with _cleanup_lock:
        pending, _cleanups[:] = list(_cleanups), []
    for t in pending:
        t.join()
    for old in root.parent.glob(f".{root.name}.old-*"):
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
