"""The facade's PXE methods: render and install trees, read and record boot evidence (:mod:`fleet.ops.pxe`).

A mixin of :class:`fleet.Fleet`; each method is the operation of :mod:`fleet.ops.pxe` on the facade's
context (``self.ctx``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet.ops import pxe as pxe_ops
from fleet.ops.pxe import PxeOverrides, PxeRenderResult

if TYPE_CHECKING:
    from fleet.core.context import Context
    from inventory.selectors import Selector
    from pxe.context import TreeContext
    from pxe.evidence import Evidence
    from pxe.install import BootSources

__all__ = ["PxeMixin"]


class PxeMixin:
    """PXE rendering, install and evidence for :class:`fleet.Fleet`."""

    ctx: Context

    def pxe_callback_key(self) -> bytes:
        """The key callback tokens are derived from (see :func:`fleet.ops.pxe.pxe_callback_key`)."""
        return pxe_ops.pxe_callback_key(self.ctx)

    def pxe_contexts(self, selector: str | Sequence[str] | Selector | None, *, root: str | Path, manager_url: str,
                     **options: Any) -> TreeContext:
        """The frozen tree context for the selected servers (see :func:`fleet.ops.pxe.pxe_contexts`)."""
        return pxe_ops.pxe_contexts(self.ctx, selector, root=root, manager_url=manager_url, **options)

    def pxe_render(self, selector: str | Sequence[str] | Selector | None, *, out: str | Path, manager_url: str,
                   overrides: PxeOverrides | Mapping[str, Any] | None = None, sources: BootSources | None = None,
                   **options: Any) -> PxeRenderResult:
        """Render the tree for ``selector`` and install it at ``out``, atomically; audited
        (see :func:`fleet.ops.pxe.pxe_render` for the options)."""
        return pxe_ops.pxe_render(self.ctx, selector, out=out, manager_url=manager_url, overrides=overrides,
                                  sources=sources, **options)

    def pxe_evidence(self, root: str | Path, *, since: datetime | None = None) -> list[Evidence]:
        """Everything the served tree's logs show, in time order (a pure read)."""
        return pxe_ops.pxe_evidence(root, since=since)

    def pxe_record_evidence(self, root: str | Path) -> list[Evidence]:
        """Record the evidence not recorded before as audit entries; returns what is new."""
        return pxe_ops.pxe_record_evidence(self.ctx, root)
