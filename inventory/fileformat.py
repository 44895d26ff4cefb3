"""The import and export file format: YAML list names, CSV file stems and the columns of each kind.

Shared by the generic reader (:mod:`inventory.importer`), its fast CSV path
(:mod:`inventory._fastcsv`) and the exporter, so that none of them imports another for it.
"""

from __future__ import annotations

from pathlib import Path

from .records import KINDS

__all__ = ["CSV_COLUMNS", "CSV_STEMS", "LISTS", "csv_order"]

#: YAML: the list names and the record kind each holds.
LISTS: dict[str, str] = {
    "sites": "site", "pods": "pod", "racks": "rack", "feeds": "feed", "servers": "server", "ups": "ups",
    "pdus": "pdu", "pools": "pool", "credentials": "credential",
}

# CSV: file stems, and the columns of each kind.
CSV_STEMS: dict[str, str] = {
    **{plural: kind for plural, kind in LISTS.items() if kind != "credential"},
    **{kind: kind for kind in KINDS if kind != "credential"},
    "nics": "nic", "nic": "nic", "disks": "disk", "disk": "disk", "outlets": "outlet", "outlet": "outlet",
}
#: The columns each CSV kind may have (order: the order export writes them).
CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "site": ("code", "name", "description"),
    "pod": ("site", "code", "name", "kind"),
    "rack": ("site", "name", "pod", "units", "description"),
    "feed": ("site", "name", "rack", "capacity_w", "voltage", "phases"),
    "server": ("hostname", "site", "pod", "rack", "position", "height", "profile", "serial", "asset_tag", "state",
               "bmc", "bmc_credential", "redfish", "redfish_credential", "redfish_tls_fingerprint", "redfish_ca_file",
               "ssh_credential", "primary_ip", "ssh_host_key", "priority", "tags", "mac",
               "ip", "ups", "description"),
    "nic": ("hostname", "name", "mac", "ip", "switch", "switch_port", "pxe"),
    "disk": ("hostname", "slot", "kind", "model", "serial", "size_gb"),
    "ups": ("name", "site", "rack", "kind", "profile", "protocol", "host", "port", "nut_name", "credential", "feed",
            "capacity_w", "battery_installed", "description"),
    "pdu": ("name", "site", "rack", "profile", "host", "port", "credential", "feed", "ups", "capacity_w",
            "description"),
    "outlet": ("ups", "pdu", "number", "name", "server", "psu"),
    "pool": ("name", "cidr", "site", "rack", "purpose", "gateway", "first", "last", "dns", "vlan"),
}


def csv_order(path: Path) -> tuple[int, str]:
    """The order CSV files are read in: by kind (parents first), then by path."""
    kind = CSV_STEMS.get(path.stem.lower())
    order = list(CSV_COLUMNS)
    return (order.index(kind) if kind in order else len(order), str(path))
