"""Validated inventory records, and the one function that writes a batch of them.

Every import path (YAML, CSV, NetBox, ``fleet add``) turns its input into the frozen records of
this package with :func:`build`, then hands the whole batch to :func:`apply`. Keeping both steps
here means the rules are written once: what a valid hostname or MAC is, which names must resolve,
what counts as a conflict, and what "re-importing the same file changes nothing" means.

Two rules shape the records:

- **Every value is validated on the way in** (``inventory.validate``), because names and addresses
  end up in dnsmasq, iPXE and preseed text later. Errors name the field and the ``file:line``.
- **An absent field means "leave it as stored"**: optional fields are ``None`` unless the input
  gave them. A NetBox export, which knows nothing of pod kinds or rack heights, then updates what
  it knows and nothing else. A given list (NICs, disks, tags, outlets) replaces the stored one.

:func:`apply` never commits: the caller owns the transaction, and any error leaves it to the
caller to roll back, so an import is all or nothing. It is written for large batches (100,000
servers): existing rows are preloaded in a few queries, checks run in Python on dicts, and rows
are written with SQLAlchemy Core ``executemany`` inserts.

The modules, from the input to the database:

- ``source``: :class:`SourceMap` (a mapping that remembers its ``file:line``), errors placed there;
- ``types``: the record dataclasses, one per kind, and :data:`KINDS`;
- ``convert``: the converters of raw values (fast paths over ``inventory.validate``);
- ``spec``: the spec table (each kind's keys, converters, multi-field checks) and :func:`build`;
- ``batch``: :func:`apply`, which runs the kind writers in order: ``writer`` (the state of one
  apply, references, sites, pods, racks, feeds, credentials, pools), ``servers``, ``power`` (UPS
  units, PDUs, outlets), all on ``bulk`` (bulk SQL reads and writes, :func:`gc_paused`).
"""

from .batch import apply
from .bulk import gc_paused
from .convert import parse_bool, split_tags
from .source import SourceMap
from .spec import build
from .types import (
    KINDS,
    CredentialRecord,
    DiskRecord,
    FeedRecord,
    NicRecord,
    OutletRecord,
    PduRecord,
    PodRecord,
    PoolRecord,
    RackRecord,
    Record,
    ServerRecord,
    SiteRecord,
    UpsRecord,
)
from .writer import ApplyReport

__all__ = [
    "KINDS",
    "ApplyReport",
    "CredentialRecord",
    "DiskRecord",
    "FeedRecord",
    "NicRecord",
    "OutletRecord",
    "PduRecord",
    "PodRecord",
    "PoolRecord",
    "RackRecord",
    "Record",
    "ServerRecord",
    "SiteRecord",
    "SourceMap",
    "UpsRecord",
    "apply",
    "build",
    "gc_paused",
    "parse_bool",
    "split_tags",
]
