"""PXE install: the whole tree is written aside and swapped in; a failure leaves the old tree intact."""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
import time
from pathlib import Path

import pytest

from pxe import BootSources, InstallError, MissingBootFile, install, render_tree
from pxe.install import DEBIAN_12_NETBOOT

from .test_pxe_context import sample_host, sample_tree

# The package re-exports the function install(), which shadows the module of the same name.
install_mod = importlib.import_module("pxe.install")


def fake_sources(base: Path) -> BootSources:
    """Tiny stand-ins for every loader and image, so tests copy bytes, not 50 MB."""
    def f(rel: str, data: bytes | None = None) -> Path:
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if data is not None else rel.encode())
        return p

    grub = base / "di"
    f("di/bootnetx64.efi")
    f("di/grubx64.efi")
    f("di/grub/grub.cfg", b"debian's menu\n")
    f("di/grub/x86_64-efi/linux.mod")
    f("di/grub/font.pf2")
    images = {}
    for os_name in ("debian-12", "ubuntu-24.04", "rocky-9"):
        f(f"img/{os_name}/linux")
        f(f"img/{os_name}/initrd.gz")
        images[os_name] = base / "img" / os_name
    return BootSources(undionly=f("ipxe/undionly.kpxe"), snponly=f("ipxe/snponly.efi"), ipxe_efi=f("ipxe/ipxe.efi"),
                       pxelinux=f("pxelinux.0"), ldlinux=f("ldlinux.c32"), grub_dir=grub, images=images,
                       extra_images={"firmware/firmware.cpio.gz": f("firmware.cpio.gz")})


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def sources(tmp_path: Path) -> BootSources:
    return fake_sources(tmp_path / "src")


def test_install_writes_the_whole_tree(tmp_path: Path, sources: BootSources) -> None:
    root = tmp_path / "pxe"
    rendered = render_tree(sample_tree(root=str(root)))
    report = install(rendered, sources)
    files = snapshot(root)
    for rel in rendered.files:
        assert (root / rel).read_bytes() == rendered.files[rel]
    for rel in ("tftp/undionly.kpxe", "tftp/snponly.efi", "tftp/ipxe.efi", "tftp/pxelinux.0", "tftp/ldlinux.c32",
                "tftp/debian-installer/amd64/bootnetx64.efi", "tftp/debian-installer/amd64/grubx64.efi",
                "tftp/grubx64.efi",
                "tftp/debian-installer/amd64/grub/x86_64-efi/linux.mod", "tftp/images/debian-12/vmlinuz",
                "tftp/images/debian-12/initrd", "http/images/rocky-9/vmlinuz", "http/images/ubuntu-24.04/initrd",
                "tftp/images/firmware/firmware.cpio.gz", "http/images/firmware/firmware.cpio.gz"):
        assert rel in files, rel
    # Ours replaces Debian's GRUB menu; HTTP images are the TFTP ones (hard links).
    assert (root / "tftp/debian-installer/amd64/grub/grub.cfg").read_bytes() == rendered.files[
        "tftp/debian-installer/amd64/grub/grub.cfg"]
    assert os.path.samefile(root / "tftp/images/debian-12/vmlinuz", root / "http/images/debian-12/vmlinuz")
    assert (root / "var").is_dir()
    assert (root / "hosts.json").stat().st_mode & 0o777 == 0o600
    assert (root / "dnsmasq.conf").stat().st_mode & 0o777 == 0o644
    assert (report.mode, report.written, report.reused, report.kept) == ("fresh", len(rendered.files), 0, 0)
    assert report.copied > 0 and report.linked >= 4
    assert (root / ".manifest.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pxe.new")]


def test_only_needed_loaders_are_installed(tmp_path: Path, sources: BootSources) -> None:
    root = tmp_path / "pxe"
    tree = sample_tree(root=str(root), hosts=(sample_host(),))
    install(render_tree(tree), sources)
    tftp = sorted(p.name for p in (root / "tftp").iterdir())
    assert tftp == ["images", "ipxe.efi", "snponly.efi", "undionly.kpxe"]


def test_reinstall_links_unchanged_files_and_keeps_var(tmp_path: Path, sources: BootSources) -> None:
    root = tmp_path / "pxe"
    rendered = render_tree(sample_tree(root=str(root)))
    install(rendered, sources)
    (root / "var/dnsmasq.log").write_text("line 1\n")
    old_inode = (root / "dnsmasq.conf").stat().st_ino
    with open(root / "var/dnsmasq.log", "a") as log:  # a running dnsmasq holds its log open across installs
        report = install(rendered, sources)
        assert (report.mode, report.copied, report.written, report.reused) == ("fresh", 0, 0, len(rendered.files))
        log.write("line 2\n")
    assert (root / "var/dnsmasq.log").read_text() == "line 1\nline 2\n"
    assert (root / "dnsmasq.conf").stat().st_ino == old_inode  # unchanged: the same file, linked into the new tree


def test_only_changed_files_are_written_again(tmp_path: Path, sources: BootSources) -> None:
    root = tmp_path / "pxe"
    install(render_tree(sample_tree(root=str(root))), sources)
    before = {rel: (root / rel).stat().st_ino for rel in ("dnsmasq.conf", "http/hosts/52-54-00-77-00-0a.ipxe",
                                                           "http/hosts/52-54-00-77-00-0d.ipxe")}
    hosts = list(sample_tree().hosts)
    hosts[0] = sample_host(kernel_args=("quiet",), ssh_keys=hosts[0].ssh_keys)
    report = install(render_tree(sample_tree(root=str(root), hosts=tuple(hosts))), sources)
    assert report.written == 1  # the changed host's script
    assert (root / "dnsmasq.conf").stat().st_ino == before["dnsmasq.conf"]
    assert (root / "http/hosts/52-54-00-77-00-0d.ipxe").stat().st_ino == before["http/hosts/52-54-00-77-00-0d.ipxe"]
    assert (root / "http/hosts/52-54-00-77-00-0a.ipxe").stat().st_ino != before["http/hosts/52-54-00-77-00-0a.ipxe"]
    assert b" quiet" in (root / "http/hosts/52-54-00-77-00-0a.ipxe").read_bytes()


def test_a_file_edited_in_place_is_written_again(tmp_path: Path, sources: BootSources) -> None:
    root = tmp_path / "pxe"
    rendered = render_tree(sample_tree(root=str(root)))
    install(rendered, sources)
    conf = root / "dnsmasq.conf"
    original = conf.read_bytes()
    time.sleep(0.01)
    with open(conf, "r+b") as fh:  # someone "fixes" the live config by hand, same length
        fh.write(b"#")
    report = install(rendered, sources)
    assert report.written == 1 and conf.read_bytes() == original


def test_the_spare_is_brought_up_to_date(tmp_path: Path, sources: BootSources) -> None:
    """From the third install on, the tree replaced last time is updated instead of built afresh."""
    root = tmp_path / "pxe"
    full = sample_tree(root=str(root))
    install(render_tree(full), sources)
    install(render_tree(full), sources)
    spare = tmp_path / ".pxe.spare"
    assert (spare / "dnsmasq.conf").exists() and not (spare / "var").exists()
    steady = install(render_tree(full), sources)
    assert (steady.mode, steady.written, steady.reused, steady.copied, steady.removed) == ("sync", 0, 0, 0, 0)
    assert steady.kept > len(render_tree(full).files)
    # One host fewer, one changed: its files go, the change is written, the rest is kept.
    hosts = list(full.hosts[1:])
    hosts[0] = sample_host("deb-pxelinux", 0x0B, loader="pxelinux", console="ttyS1,9600")
    smaller = render_tree(sample_tree(root=str(root), hosts=tuple(hosts)))
    report = install(smaller, sources)
    assert report.mode == "sync" and report.written == 3  # its PXELINUX config, dnsmasq.conf, hosts.json
    assert report.removed == 2  # the other host's iPXE script and preseed
    assert not (root / "http/answers/deb-ipxe.lab.example.net").exists()
    assert not (root / "http/hosts/52-54-00-77-00-0a.ipxe").exists()
    assert b"console=ttyS1,9600" in (root / "tftp/pxelinux.cfg/01-52-54-00-77-00-0b").read_bytes()
    for rel, data in smaller.files.items():
        assert (root / rel).read_bytes() == data
    # The tree holds exactly what was rendered plus loaders, images, the manifest and var/.
    stray = [rel for rel in snapshot(root) if rel not in smaller.files and not rel.startswith(
        ("tftp/images/", "http/images/", "tftp/debian-installer/", "var/")) and rel not in (
        ".manifest.json", "tftp/undionly.kpxe", "tftp/snponly.efi", "tftp/ipxe.efi", "tftp/pxelinux.0",
        "tftp/ldlinux.c32", "tftp/grubx64.efi")]
    assert stray == []


def test_a_spare_without_manifest_is_not_trusted(tmp_path: Path, sources: BootSources) -> None:
    root = tmp_path / "pxe"
    rendered = render_tree(sample_tree(root=str(root)))
    install(rendered, sources)
    install(rendered, sources)
    spare = tmp_path / ".pxe.spare"
    (spare / ".manifest.json").unlink()  # a sync died halfway
    (spare / "dnsmasq.conf").write_text("garbage\n")
    report = install(rendered, sources)
    assert report.mode == "fresh" and (root / "dnsmasq.conf").read_bytes() == rendered.files["dnsmasq.conf"]
    (root / ".manifest.json").write_text("not json")  # nothing in the live tree is trusted either
    install(rendered, sources)  # a sync of the spare, linking nothing from the live tree
    assert (root / "dnsmasq.conf").read_bytes() == rendered.files["dnsmasq.conf"]


@pytest.mark.parametrize("mode", ["fresh", "sync"])
@pytest.mark.parametrize("when", ["put", "copy", "link", "remove_stale"])
def test_failure_mid_install_leaves_the_old_tree(tmp_path: Path, sources: BootSources,
                                                 monkeypatch: pytest.MonkeyPatch, when: str, mode: str) -> None:
    root = tmp_path / "pxe"
    for _ in range(1 if mode == "fresh" else 2):
        install(render_tree(sample_tree(root=str(root))), sources)
    (root / "var/dnsmasq.leases").write_text("lease\n")
    before = snapshot(root)
    calls = {"n": 0}
    original = getattr(install_mod._Writer, when)

    def failing(self: object, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == (1 if when == "remove_stale" else 2):
            raise OSError(28, "No space left on device")
        original(self, *args, **kwargs)

    monkeypatch.setattr(install_mod._Writer, when, failing)
    changed = sample_tree(root=str(root), hosts=(sample_host("new-host", 0x40),))
    with pytest.raises(InstallError, match=r"old tree is intact.*No space left"):
        install(render_tree(changed), sources)
    assert snapshot(root) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".pxe.lock"]


def test_failure_at_the_swap_gives_var_back(tmp_path: Path, sources: BootSources,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "pxe"
    install(render_tree(sample_tree(root=str(root))), sources)
    (root / "var/http.jsonl").write_text("{}\n")
    before = snapshot(root)

    def broken(a: Path, b: Path) -> bool:
        raise OSError(5, "Input/output error", str(a))

    monkeypatch.setattr(install_mod, "_exchange", broken)
    with pytest.raises(InstallError):
        install(render_tree(sample_tree(root=str(root))), sources)
    assert snapshot(root) == before


def test_fallback_without_renameat2(tmp_path: Path, sources: BootSources, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "pxe"
    install(render_tree(sample_tree(root=str(root), hosts=(sample_host(),))), sources)
    monkeypatch.setattr(install_mod, "_exchange", lambda a, b: False)
    install(render_tree(sample_tree(root=str(root))), sources)
    assert (root / "tftp/pxelinux.0").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".pxe.lock", ".pxe.spare"]


def test_crash_leftovers_are_removed(tmp_path: Path, sources: BootSources) -> None:
    root = tmp_path / "pxe"
    rendered = render_tree(sample_tree(root=str(root)))
    install(rendered, sources)
    for left in (".pxe.old-1-2", ".pxe.new-999"):  # left by runs that died
        (tmp_path / left / "http").mkdir(parents=True)
    install(rendered, sources)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".pxe.lock", ".pxe.spare"]


def test_readers_never_see_a_missing_tree(tmp_path: Path, sources: BootSources) -> None:
    """With renameat2(RENAME_EXCHANGE) the root always holds a complete tree, even mid-swap."""
    root = tmp_path / "pxe"
    rendered = render_tree(sample_tree(root=str(root)))
    install(rendered, sources)
    misses: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for rel in ("dnsmasq.conf", "http/boot.ipxe", "tftp/undionly.kpxe"):
                try:
                    (root / rel).read_bytes()
                except OSError as exc:
                    misses.append(f"{rel}: {exc}")

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(15):
            install(rendered, sources)
    finally:
        stop.set()
        t.join()
    assert misses == []


def test_missing_loader_is_named_before_anything_is_written(tmp_path: Path, sources: BootSources) -> None:
    root = tmp_path / "pxe"
    bad = BootSources(**{**sources.__dict__, "pxelinux": tmp_path / "nope/pxelinux.0"})
    with pytest.raises(MissingBootFile, match=r"nope/pxelinux\.0 is missing \(install the pxelinux package"):
        install(render_tree(sample_tree(root=str(root))), bad)
    assert not root.exists()


def test_missing_image_and_extra_initrd(tmp_path: Path, sources: BootSources) -> None:
    root = tmp_path / "pxe"
    tree = sample_tree(root=str(root), hosts=(sample_host("a", 0x0A, "debian-11"),))
    with pytest.raises(MissingBootFile, match="no image directory for debian-11"):
        install(render_tree(tree), sources)
    (tmp_path / "images/debian-11").mkdir(parents=True)
    (tmp_path / "images/debian-11/vmlinuz").write_bytes(b"k")
    with_dir = BootSources(**{**sources.__dict__, "image_dir": tmp_path / "images"})
    with pytest.raises(MissingBootFile, match=r"no initrd \(initrd, initrd\.gz, initrd\.img\) in "):
        install(render_tree(tree), with_dir)
    (tmp_path / "images/debian-11/initrd.img").write_bytes(b"i")
    install(render_tree(tree), with_dir)
    assert (root / "tftp/images/debian-11/initrd").read_bytes() == b"i"
    extra = sample_tree(root=str(root), hosts=(sample_host("b", 0x0B, extra_initrds=("probe/probe.gz",)),))
    with pytest.raises(MissingBootFile, match=r"images/probe/probe\.gz: no file given"):
        install(render_tree(extra), sources)


def test_grub_module_dir_missing(tmp_path: Path, sources: BootSources) -> None:
    bad = BootSources(**{**sources.__dict__, "grub_dir": tmp_path / "empty"})
    with pytest.raises(MissingBootFile, match="GRUB's module directory"):
        install(render_tree(sample_tree(root=str(tmp_path / "pxe"))), bad)


def test_refuses_paths_outside_the_tree(tmp_path: Path, sources: BootSources) -> None:
    from dataclasses import replace

    rendered = render_tree(sample_tree(root=str(tmp_path / "pxe"), hosts=(sample_host(),)))
    for evil in ("../escape", "/etc/passwd", "http/../../x", "a//b", "x\n"):
        bad = replace(rendered, files={**rendered.files, evil: b"x"})
        with pytest.raises(InstallError, match="outside the tree"):
            install(bad, sources)
    assert not (tmp_path / "escape").exists()


@pytest.mark.skipif(not (DEBIAN_12_NETBOOT / "linux").exists(), reason="debian-installer-12-netboot-amd64 missing")
def test_default_sources_are_the_system_packages(tmp_path: Path) -> None:
    root = tmp_path / "pxe"
    tree = sample_tree(root=str(root), hosts=tuple(h for h in sample_tree().hosts if h.os == "debian-12"
                                                   and not h.extra_initrds))
    install(render_tree(tree))
    assert (root / "tftp/images/debian-12/vmlinuz").stat().st_size == (DEBIAN_12_NETBOOT / "linux").stat().st_size
    assert (root / "tftp/undionly.kpxe").stat().st_size > 10_000
