"""Pure rendering: frozen contexts in, file contents out. No I/O but reading templates.

One sandboxed Jinja environment (``StrictUndefined``, ``keep_trailing_newline``, ``trim_blocks``);
each template renders from one context object (``tree`` or ``host``; a host's boot script also gets
its kernel command line, itself rendered from the same host). Templates never read the clock or a
random source, so the same contexts always give the same bytes.

Template lookup falls back by purpose, OS, family and architecture (first found wins)::

    {purpose}.{os}.{arch}.j2   e.g. preseed.cfg.debian-12.x86_64.j2
    {purpose}.{os}.j2          e.g. preseed.cfg.debian-12.j2
    {purpose}.{family}.{arch}.j2
    {purpose}.{family}.j2      e.g. cmdline.debian.j2
    {purpose}.{arch}.j2
    {purpose}.j2               e.g. preseed.cfg.j2

in each template directory given (an operator's own first), then in ``pxe/templates/``.

Purposes: ``dnsmasq.conf``, ``boot.ipxe``, ``grub.cfg`` (tree); ``cmdline``, ``host.ipxe``,
``host.pxelinux``, ``host.grub`` and the answer files of the host's family (:data:`ANSWER_FILES`).

A value that contains a line break where an expression is printed stops the render with a
:class:`~pxe.errors.TemplateError` (contexts refuse such values already; this is the second lock).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from .context import GRUB_DIR, HostContext, Network, TreeContext
from .errors import TemplateError

__all__ = [
    "ANSWER_FILES",
    "BUILTIN_TEMPLATES",
    "RenderedTree",
    "Renderer",
    "render_host",
    "render_tree",
    "template_candidates",
]

BUILTIN_TEMPLATES = Path(__file__).with_name("templates")

#: Answer files per OS family: (purpose, file name under ``http/answers/HOST/``).
ANSWER_FILES: Mapping[str, tuple[str, ...]] = {
    "debian": ("preseed.cfg",),
    "ubuntu": ("user-data", "meta-data"),
    "rhel": ("ks.cfg",),
}

#: The boot file a host's loader reads, per loader: (purpose, path attribute of HostContext).
_BOOT_FILE = {"ipxe": ("host.ipxe", "ipxe_path"), "pxelinux": ("host.pxelinux", "pxelinux_path"),
              "grub": ("host.grub", "grub_path")}

# What a generated kernel argument may hold: our own args may carry ';' (cloud-init's ds=) or be '---'.
_CMDLINE_ARG = re.compile(r"^(---|[A-Za-z0-9_.][A-Za-z0-9_.,:/=+@%;-]*)\Z")
_GRUB_PLAIN = re.compile(r"^[A-Za-z0-9_.,:/=+@%-]+\Z")


def template_candidates(purpose: str, *, os: str | None = None, family: str | None = None,
                        arch: str | None = None) -> list[str]:
    """Template names tried for ``purpose``, most specific first."""
    names = []
    if os and arch:
        names.append(f"{purpose}.{os}.{arch}.j2")
    if os:
        names.append(f"{purpose}.{os}.j2")
    if family and arch:
        names.append(f"{purpose}.{family}.{arch}.j2")
    if family:
        names.append(f"{purpose}.{family}.j2")
    if arch:
        names.append(f"{purpose}.{arch}.j2")
    names.append(f"{purpose}.j2")
    return names


def _finalize(value: Any) -> Any:
    if isinstance(value, str) and ("\n" in value or "\r" in value or "\x00" in value):
        raise TemplateError(f"refusing to print a value with a line break: {value[:60]!r}")
    return value


def _grub_word(value: str) -> str:
    """A kernel argument as one GRUB word: plain, or single-quoted if GRUB would read syntax in it."""
    if _GRUB_PLAIN.match(value):
        return value
    if "'" in value:
        raise TemplateError(f"cannot quote {value!r} for GRUB")
    return f"'{value}'"


def _yaml_str(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is YAML's)."""
    return json.dumps(str(value))


_CONTEXT_TYPES = (HostContext, TreeContext, Network)


class _Environment(SandboxedEnvironment):
    """The sandbox, with a fast path for our own frozen context classes: their public attributes are
    fields, properties and pure methods, so only private names need refusing there. Everything else
    (strings, tuples, whatever a filter returns) gets the full sandbox check."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if type(obj) in _CONTEXT_TYPES:
            return not attr.startswith("_")
        return super().is_safe_attribute(obj, attr, value)


@dataclass(frozen=True)
class RenderedTree:
    """The rendered text files of a tree, by path relative to its root, and what else it needs.

    ``loaders``, ``oses`` and ``extra_images`` tell :func:`pxe.install` which boot loaders, OS images
    and extra initrds to copy in.
    """

    root: str
    files: Mapping[str, bytes]
    loaders: frozenset[str]
    oses: tuple[str, ...]
    extra_images: tuple[str, ...] = ()
    hosts: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.files.values())


class Renderer:
    """The one Jinja environment, with template lookup by fallback (cached per purpose/OS/arch).

    ``template_dirs`` are searched before the built-in templates, so an operator can override one
    file (e.g. ``preseed.cfg.debian-12.j2``) and keep the rest.
    """

    def __init__(self, template_dirs: Sequence[str | Path] = ()) -> None:
        search = [str(Path(d)) for d in template_dirs] + [str(BUILTIN_TEMPLATES)]
        self.env = _Environment(
            loader=jinja2.FileSystemLoader(search),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            auto_reload=False,
            finalize=_finalize,
        )
        self.env.filters["grub_word"] = _grub_word
        self.env.filters["yaml_str"] = _yaml_str
        self._cache: dict[tuple[str, str | None, str | None, str | None], jinja2.Template] = {}

    def template(self, purpose: str, *, os: str | None = None, family: str | None = None,
                 arch: str | None = None) -> jinja2.Template:
        """The most specific template for ``purpose`` (see the module docstring)."""
        key = (purpose, os, family, arch)
        found = self._cache.get(key)
        if found is None:
            names = template_candidates(purpose, os=os, family=family, arch=arch)
            try:
                found = self.env.select_template(names)
            except jinja2.TemplatesNotFound:
                raise TemplateError(f"no template for {purpose!r}: looked for {', '.join(names)}") from None
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{exc.filename or exc.name}:{exc.lineno}: {exc.message}") from None
            self._cache[key] = found
        return found

    def render(self, purpose: str, *, host: HostContext | None = None, tree: TreeContext | None = None,
               **extra: Any) -> str:
        """Render ``purpose`` for one host (lookup by its OS/family/arch) or for the tree."""
        if host is not None:
            tpl = self.template(purpose, os=host.os, family=host.family, arch=host.arch)
            what = host.hostname
        else:
            tpl = self.template(purpose)
            what = "the tree"
        try:
            return tpl.render(host=host, tree=tree, **extra)
        except TemplateError as exc:
            raise TemplateError(f"{tpl.name} for {what}: {exc}") from None
        except jinja2.TemplateError as exc:  # UndefinedError, SecurityError, a raising filter...
            raise TemplateError(f"{tpl.name} for {what}: {exc.__class__.__name__}: {exc}") from None

    def cmdline(self, host: HostContext) -> tuple[str, ...]:
        """The host's kernel arguments: the ``cmdline`` template's non-empty lines, each checked."""
        text = self.render("cmdline", host=host)
        args = tuple(line.strip() for line in text.splitlines() if line.strip())
        for arg in args:
            if not _CMDLINE_ARG.match(arg):
                raise TemplateError(f"cmdline for {host.hostname}: {arg!r} is not a safe kernel argument")
        return args

    def host_files(self, host: HostContext) -> dict[str, bytes]:
        """One host's files: its loader's boot file and its answer files, by tree path."""
        cmdline = self.cmdline(host)
        purpose, attr = _BOOT_FILE[host.loader]
        files = {getattr(host, attr): self.render(purpose, host=host, cmdline=cmdline).encode()}
        for name in ANSWER_FILES[host.family]:
            files[f"{host.answers_dir}/{name}"] = self.render(name, host=host).encode()
        return files

    def tree_files(self, tree: TreeContext) -> dict[str, bytes]:
        """The tree-wide files: dnsmasq.conf, the iPXE stage-1 script, GRUB's entry point."""
        files = {
            "dnsmasq.conf": self.render("dnsmasq.conf", tree=tree).encode(),
            "http/boot.ipxe": self.render("boot.ipxe", tree=tree).encode(),
        }
        if "grub" in tree.loaders:
            files[f"{GRUB_DIR}/grub.cfg"] = self.render("grub.cfg", tree=tree).encode()
        return files


def _index(tree: TreeContext) -> bytes:
    """``hosts.json``: who is who in the tree, for the HTTP server (tokens, the address each host's
    callbacks must come from: its ``ip``, and until when) and the log readers.

    Outside ``http/`` and ``tftp/``, so never served.
    """
    hosts = [{"hostname": h.hostname, "short_name": h.short_name, "mac": h.mac, "ip": h.ip, "os": h.os,
              "loader": h.loader, "token": h.token, "token_expires": h.token_expires or None} for h in tree.hosts]
    doc = {"version": 1, "manager_url": tree.manager_url, "network": tree.network.cidr, "hosts": hosts}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def render_host(host: HostContext, *, renderer: Renderer | None = None) -> dict[str, bytes]:
    """One host's files (boot file for its loader, answer files), by path relative to the tree root."""
    return (renderer or Renderer()).host_files(host)


def render_tree(tree: TreeContext, *, renderer: Renderer | None = None,
                template_dirs: Sequence[str | Path] = ()) -> RenderedTree:
    """Every text file of the tree, rendered in memory. Raises before returning anything if one fails."""
    r = renderer or Renderer(template_dirs)
    files: dict[str, bytes] = r.tree_files(tree)
    for host in tree.hosts:
        files.update(r.host_files(host))
    files["hosts.json"] = _index(tree)
    return RenderedTree(root=tree.root, files=files, loaders=tree.loaders, oses=tree.oses,
                        extra_images=tree.extra_images, hosts=len(tree.hosts))
