"""Where Rackfleet's shipped data lives: the checkout's folders, or the installed copy.

``hardware-profiles/`` and ``examples/`` sit beside the packages in a checkout (and an editable
install); a wheel installs them under ``<data>/share/rackfleet/`` (``[tool.setuptools.data-files]``
in pyproject.toml), where ``<data>`` is the install scheme's data path: ``sys.prefix`` in a venv,
``~/.local`` for ``pip install --user``.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

__all__ = ["data_candidates", "data_path"]

_CHECKOUT = Path(__file__).resolve().parent.parent


def data_candidates(*parts: str) -> list[Path]:
    """Where ``parts`` (e.g. ``"hardware-profiles"``) may be, in the order they are tried."""
    roots = [_CHECKOUT]
    paths = [sysconfig.get_path("data"), sys.prefix]
    if f"{os.name}_user" in sysconfig.get_scheme_names():
        paths.append(sysconfig.get_path("data", f"{os.name}_user"))
    for scheme_path in paths:
        share = Path(scheme_path) / "share" / "rackfleet"
        if share not in roots:
            roots.append(share)
    return [root.joinpath(*parts) for root in roots]


def data_path(*parts: str) -> Path:
    """The first of :func:`data_candidates` that exists (else the checkout's, for the error message)."""
    candidates = data_candidates(*parts)
    return next((c for c in candidates if c.exists()), candidates[0])
