r"""Strict validators for every value that may later reach a config file.

Hostnames, MACs, IPs, short codes and tags end up in dnsmasq, iPXE, GRUB and preseed text. They
are checked here, once, on the way in (import, ``fleet add``, ``fleet set``), so that nothing
stored can inject a newline, a quote, a ``${...}`` or a ``;`` into rendered text later.
Each function returns the normalised value or raises :class:`fleet.errors.ValidationError`.

Free text (descriptions, reasons, serials, names of things, usernames) reaches terminals: the
CLI's tables, ``fleet show``, the audit, the TUI. :func:`check_free_text` is the one rule for it,
and :func:`check_text` (free text that may also reach a config file) applies it first. Refused,
wherever they stand: C0 controls (U+0000-U+001F) except tab, DEL, C1 controls (U+0080-U+009F),
every format character (category Cf: the bidi embeddings, overrides and isolates U+202A-U+202E and
U+2066-U+2069, the marks LRM/RLM/ALM U+200E/U+200F/U+061C, zero-width space, BOM...), line and
paragraph separators (U+2028/U+2029), surrogates and unassigned code points. ZWJ and ZWNJ
(U+200D/U+200C) are kept only inside a word (between two letters, marks or symbols: Persian,
Indic scripts, emoji sequences). No free-text field is multi-line: a newline is refused too. The
error names the field, the position (1-based) and the code point, never the character itself.
:func:`visible` is the output side of the same rule: what was stored before it (or comes from a
device) is shown with such characters escaped (``\x1b``, ``\u202e``), never raw.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from datetime import date

from fleet.errors import ValidationError

__all__ = [
    "BMC_DEFAULT_PORT",
    "REDFISH_DEFAULT_PORT",
    "check_code",
    "check_date",
    "check_endpoint",
    "check_free_text",
    "check_hostname",
    "check_int",
    "check_ip",
    "check_mac",
    "check_name",
    "check_network",
    "check_ssh_host_key",
    "check_tag",
    "check_text",
    "check_tls_fingerprint",
    "visible",
]

BMC_DEFAULT_PORT = 623
REDFISH_DEFAULT_PORT = 443
_FINGERPRINT_HEX = re.compile(r"[0-9a-f]{64}")

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_TAG = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}\Z")
_MAC_HEX = re.compile(r"^[0-9a-f]{12}\Z")
_SSH_HOST_KEY = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]{16,}={0,2}\Z")
# Printable text without anything a shell, a template or a config file would read as syntax.
_UNSAFE_TEXT = re.compile(r"[\x00-\x1f\x7f\"'`$;{}<>\\|]")


def check_hostname(value: object, field: str = "hostname") -> str:
    """An RFC 1123 host name (or FQDN), lower-cased. At most 253 characters, labels 1-63."""
    if not isinstance(value, str) or not value:
        raise ValidationError("a host name is required", field=field, value=value)
    name = value.strip().lower()
    if name != value.strip().lower() or not name or len(name) > 253 or name.endswith("."):
        raise ValidationError(f"{value!r} is not a valid host name", field=field, value=value)
    for label in name.split("."):
        if not _LABEL.match(label):
            raise ValidationError(
                f"{value!r} is not a valid host name (RFC 1123: letters, digits and inner hyphens, "
                "labels of 1-63 characters)", field=field, value=value)
    if name.replace(".", "").isdigit():
        raise ValidationError(f"{value!r} is all digits; a host name must not look like an address",
                              field=field, value=value)
    return name


def check_mac(value: object, field: str = "mac") -> str:
    """A unicast Ethernet MAC, as ``aa:bb:cc:dd:ee:ff``. Accepts ``-``, ``:``, ``.`` or no separators."""
    if not isinstance(value, str):
        raise ValidationError("a MAC address is required", field=field, value=value)
    raw = value.strip().lower()
    hexdigits = re.sub(r"[:.\-]", "", raw)
    seps = set(re.sub(r"[0-9a-f]", "", raw))
    if not _MAC_HEX.match(hexdigits) or len(seps) > 1:
        raise ValidationError(f"{value!r} is not a MAC address", field=field, value=value)
    if seps and not (re.fullmatch(r"([0-9a-f]{2}[:-]){5}[0-9a-f]{2}", raw)
                     or re.fullmatch(r"([0-9a-f]{4}\.){2}[0-9a-f]{4}", raw)):
        raise ValidationError(f"{value!r} is not a MAC address", field=field, value=value)
    if hexdigits in ("000000000000", "ffffffffffff"):
        raise ValidationError(f"{value!r} is not a usable MAC address", field=field, value=value)
    if int(hexdigits[:2], 16) & 1:
        raise ValidationError(f"{value!r} is a multicast MAC; a NIC's address is unicast",
                              field=field, value=value)
    return ":".join(hexdigits[i:i + 2] for i in range(0, 12, 2))


def check_ip(value: object, field: str = "ip") -> str:
    """An IPv4 or IPv6 address (no prefix length), in its compressed form."""
    if not isinstance(value, str):
        raise ValidationError("an IP address is required", field=field, value=value)
    text = value.strip()
    if "/" in text:
        raise ValidationError(f"{value!r}: give an address without a prefix length", field=field, value=value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValidationError(f"{value!r} is not an IP address", field=field, value=value) from None


def check_network(value: object, field: str = "cidr") -> str:
    """A network in CIDR form, host bits clear."""
    if not isinstance(value, str):
        raise ValidationError("a network (CIDR) is required", field=field, value=value)
    try:
        return str(ipaddress.ip_network(value.strip(), strict=True))
    except ValueError as exc:
        raise ValidationError(f"{value!r} is not a network: {exc}", field=field, value=value) from None


def check_endpoint(value: object, field: str = "bmc", default_port: int = BMC_DEFAULT_PORT) -> tuple[str, int]:
    """``HOST[:PORT]`` or ``[V6]:PORT``, where HOST is an IP address or a host name."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("an address is required", field=field, value=value)
    text = value.strip()
    port: int | str = default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValidationError(f"{value!r} is not HOST[:PORT]", field=field, value=value)
        if rest:
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    port_num = check_int(port, field=f"{field} port", low=1, high=65535)
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        host = check_hostname(host, field=field)
    return host, port_num


def check_code(value: object, field: str) -> str:
    """A short code (site slug, pod, rack, UPS, PDU, feed, pool, credential name)."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValidationError("a name is required", field=field, value=value)
    text = str(value).strip()
    if not _CODE.match(text):
        raise ValidationError(
            f"{value!r} is not a valid name (letters, digits, '.', '_', '-'; at most 64; "
            "starting with a letter or digit)", field=field, value=value)
    return text


def check_name(value: object, field: str) -> str:
    """A UPS/PDU/credential name: a code that is also safe in a NUT ``UPS@host`` target."""
    return check_code(value, field)


def check_tag(value: object, field: str = "tags") -> str:
    if not isinstance(value, str):
        raise ValidationError("a tag must be text", field=field, value=value)
    tag = value.strip().lower()
    if not _TAG.match(tag):
        raise ValidationError(f"{value!r} is not a valid tag (lower-case letters, digits, '_', '.', ':', '-')",
                              field=field, value=value)
    return tag


def check_tls_fingerprint(value: object, field: str = "redfish_tls_fingerprint") -> str:
    """A certificate's SHA-256 fingerprint as ``sha256:`` + 64 lowercase hex digits (of the DER).

    Also taken: upper case, and the colon-separated pairs ``openssl x509 -fingerprint -sha256`` prints.
    """
    if not isinstance(value, str):
        raise ValidationError("must be text like 'sha256:<64 hex digits>'", field=field, value=value)
    text = value.strip().lower()
    algo, sep, digits = text.partition(":")
    if not sep or algo != "sha256":
        raise ValidationError(f"{value!r} is not a SHA-256 fingerprint (sha256:<64 hex digits>)", field=field,
                              value=value)
    digits = digits.replace(":", "")
    if not _FINGERPRINT_HEX.fullmatch(digits):
        raise ValidationError(f"{value!r}: a SHA-256 fingerprint has 64 hex digits", field=field, value=value)
    return f"sha256:{digits}"


def check_ssh_host_key(value: object, field: str = "ssh_host_key") -> str:
    """A pinned SSH host key as ``TYPE BASE64`` (a known_hosts line without the host; a comment is dropped)."""
    if not isinstance(value, str):
        raise ValidationError("must be text like 'ssh-ed25519 AAAA...'", field=field, value=value)
    parts = value.strip().split(" ")
    text = " ".join(parts[:2])
    if len(text) > 1024 or not _SSH_HOST_KEY.match(text) or any(c in value for c in "\n\r\0"):
        raise ValidationError("expected an SSH public host key 'TYPE BASE64' (ssh-ed25519, ecdsa-sha2-nistp256/384/521 "
                              "or ssh-rsa)", field=field, value=value)
    return text


_ZW_JOINERS = frozenset("\u200c\u200d")  # ZWNJ, ZWJ: kept inside words only
_WORDISH = ("L", "M", "S")  # the neighbours a joiner may stand between (letters, marks, symbols)
_KIND = {"Cc": "a control character", "Cf": "an invisible format character", "Cs": "a surrogate",
         "Cn": "an unassigned code point", "Zl": "a line separator", "Zp": "a paragraph separator"}
_BIDI = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}


def _refused(text: str, i: int) -> bool:
    ch = text[i]
    if ch == "\t":
        return False
    cat = unicodedata.category(ch)
    if cat not in _KIND:
        return False
    if ch in _ZW_JOINERS and 0 < i < len(text) - 1:
        before, after = unicodedata.category(text[i - 1]), unicodedata.category(text[i + 1])
        return not (before[0] in _WORDISH and after[0] in _WORDISH)
    return True


def _describe(ch: str) -> str:
    if ord(ch) in _BIDI:
        return "a bidirectional control"
    return _KIND[unicodedata.category(ch)]


def check_free_text(value: object, field: str, max_len: int = 256) -> str:
    """Free text for people (a reason, a description): one line, at most ``max_len`` characters, without
    the characters that act on a terminal instead of showing (see the module's docstring). Stripped."""
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValidationError("must be text", field=field)
    text = value.strip()
    if len(text) > max_len:
        raise ValidationError(f"longer than {max_len} characters ({len(text)})", field=field)
    if text.isascii() and text.isprintable():  # the common case, checked at C speed
        return text
    for i, ch in enumerate(text):
        if _refused(text, i):
            raise ValidationError(f"character {i + 1} is U+{ord(ch):04X} ({_describe(ch)}), which is not "
                                  "allowed in text", field=field)
    return text


def visible(text: object) -> str:
    r"""``text`` for a terminal: each character :func:`check_free_text` refuses (control, bidi, format,
    unassigned) written as an escape (``\x1b``, ``\u202e``), everything else (tab included) as it is."""
    s = "" if text is None else str(text)
    if s.isascii() and s.isprintable():
        return s
    out = []
    for i, ch in enumerate(s):
        if not _refused(s, i):
            out.append(ch)
        else:
            cp = ord(ch)
            out.append(f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}")
    return "".join(out)


def check_text(value: object, field: str, max_len: int = 128) -> str:
    r"""Free text that is still safe in a config file: :func:`check_free_text`, and no tab, quote or $;{}<>|\."""
    text = check_free_text(value, field, max_len)
    bad = _UNSAFE_TEXT.search(text)
    if bad:
        raise ValidationError(f"{value!r} contains {bad.group()!r}, which is not allowed here",
                              field=field, value=value)
    return text


def check_int(value: object, field: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool):
        raise ValidationError("must be a whole number", field=field, value=value)
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ValidationError(f"{value!r} is not a whole number", field=field, value=value)
        value = int(text)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ValidationError(f"{value!r} is not a whole number", field=field, value=value)
    if low is not None and value < low:
        raise ValidationError(f"{value} is below the minimum {low}", field=field, value=value)
    if high is not None and value > high:
        raise ValidationError(f"{value} is above the maximum {high}", field=field, value=value)
    return value


def check_date(value: object, field: str) -> date:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValidationError(f"{value!r} is not a date (YYYY-MM-DD)", field=field, value=value)
