"""``pii.redact``: find e-mail addresses, phone numbers, IP addresses, payment-card numbers, US
social security numbers and IBANs in ``text`` and replace them with typed placeholders.

Detected (default placeholder in brackets):

* ``email`` (``<EMAIL>``): ``local@domain.tld``; local part and domain labels in ASCII or
  Latin, Greek and Cyrillic letters, ASCII top-level domain. Image names such as
  ``logo@2x.png`` are not addresses.
* ``iban`` (``<IBAN>``): country code, two check digits and the BBAN, unspaced or spaced; the
  length must match the country (:data:`IBAN_LENGTHS`, SWIFT registry) and the ISO 7064
  mod-97 check must hold. Upper case only.
* ``credit_card`` (``<CREDIT_CARD>``): 13-19 digits, contiguous or grouped with one kind of
  separator (space or dash) in a card layout (4-4-4-4[-1..3], 4-6-5, 4-6-4), an issuer prefix
  that exists for that length (Visa, Mastercard, Amex, Discover, Diners, JCB, UnionPay, Mir,
  Maestro) and a valid Luhn checksum.
* ``ssn`` (``<SSN>``): US ``AAA-GG-SSSS`` with dashes only; area 000, 666 and 900-999, group 00
  and serial 0000 are rejected.
* ``ip`` (``<IP_ADDRESS>``): IPv4 with octets 0-255 and no leading zeros; IPv6 (full,
  ``::``-compressed, IPv4-suffixed) checked with :mod:`ipaddress`.
* ``phone`` (``<PHONE>``), three layouts (option ``phone_formats``): ``international``
  (``+CC`` or ``(+CC)`` then 8-15 digits in all, a ``(0)`` trunk allowed), ``nanp`` (North
  American ``(212) 555-1234``, ``212-555-1234``, ``212.555.1234``, ``212 555 1234``,
  ``1-800-555-1234``: area code and exchange must be valid, not N11) and ``national``
  (trunk-prefixed, ``020 7946 0958``, ``01 23 45 67 89``, ``(030) 1234567``, ``03-1234-5678``:
  10-11 digits, one kind of separator). An extension (``x123``, ``ext. 123``) is part of the
  span.

How: each type is one regular expression written in the common subset of Rust ``regex`` and
Python ``re`` (no lookaround; ``\\b`` is ASCII in both engines), so both find the same matches.
Polars scans the whole column with it (``str.contains``); ``str.extract_all`` lists the matches
of the rows that hit; the distinct candidates are validated once in Python (checksums, tables,
layout); only rows with at least one valid candidate are rewritten in Python, where each match
is located with ``str.find`` and its context is checked: a number glued to a letter, or
continued by a separator and a digit (``12-212-555-1234``, ``4111111111111111.50``,
``1.10.0.0.1``), is part of a longer token and is left alone. No Python loop touches rows
without a valid candidate.

Precedence: ``email`` > ``iban`` > ``credit_card`` > ``ssn`` > ``ip`` > ``phone``, applied in
that order. A redacted span becomes an internal marker (private-use characters, no digits) that
no later pattern matches, so a character is counted at most once, and ``detect`` counts exactly
what ``redact`` replaces. E-mails go first so the digits inside them are not phone numbers;
IBANs and cards before SSNs and phones so account numbers are not read as either; a valid dotted
quad is an address, not a phone. With a subset of ``types`` the order holds among those only.
The passes repeat on changed rows until nothing more is found (a number rejected because it
touched another type's digits is judged again once they are a marker), so the step is
idempotent: running it on its own output finds nothing (with the default placeholders; a custom
placeholder that itself looks like PII can be found again).

Not flagged on purpose: years, dates (``2024-03-15``, ``03/15/2024``), prices and quantities
(``$1,234,567``, ``155,221 bags``, ``3.5 mln``, ``500 750 1000``), ``1.2.3``, 9-digit numbers
without SSN dashes, contiguous 10-digit numbers without ``+1`` (too often ids or amounts),
ISBNs (no card layout or issuer starts with 9), and these dotted quads: all-single-digit ones
(``1.2.3.4``: in prose far more often an outline or version number than an address; the real
ones, such as ``8.8.8.8``, are public resolvers, not personal data), those after a version or
section word (``version``, ``v``, ``release``, ``build``, ``section``, ``§``, ``table``,
``figure``, ...) and those inside a longer dotted chain (``1.3.6.1.4.1``). Private and loopback
IPv4 addresses are redacted like any other.

Known limits: internationalized e-mail domains (non-ASCII TLDs) and scripts other than
Latin/Greek/Cyrillic in local parts are missed (``émile@`` is found, ``邮件@`` is not); lower-case
IBANs; SSNs written without dashes; national phone numbers without a trunk ``0`` or with 9 or
12+ digits; IPv6 needs three non-empty groups and a decimal digit (``::1``, ``fe80::1`` and C++
``a::b`` are left alone). The leftmost match wins: a rejected candidate is not re-split into
shorter valid ones (``01752 508-481-3700``, a ZIP code glued to a phone, is missed), except that
a card or international phone followed by one extra digit group is retried without it and an
IBAN followed by more capitals is cut at the country length.

Speed (one core, ``POLARS_MAX_THREADS=1``, this machine): about 75 MB/s on Reuters-21578
bodies (8.5 MB of newswire full of numbers, two phone numbers); about 23 MB/s on 20 Newsgroups
(13.8 MB, 26,000 e-mails, 2,100 phones, 500 IPs: nearly every row is rewritten).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import polars as pl
import pyarrow as pa

from dataforge.errors import ConfigError, choices
from dataforge.registry import register
from dataforge.step import Step, StepOutput

logger = logging.getLogger(__name__)

#: Every PII type, in precedence order.
PII_TYPES = ("email", "iban", "credit_card", "ssn", "ip", "phone")
PLACEHOLDERS = {
    "email": "<EMAIL>",
    "iban": "<IBAN>",
    "credit_card": "<CREDIT_CARD>",
    "ssn": "<SSN>",
    "ip": "<IP_ADDRESS>",
    "phone": "<PHONE>",
}
PHONE_FORMATS = ("international", "nanp", "national")
MODES = ("redact", "detect")

Span = tuple[int, int]
# check(text, start, end) -> the accepted span (possibly shortened) or None.
Check = Callable[[str, int, int], "Span | None"]

# Internal markers for redacted spans (private-use characters: not word characters, no digits),
# turned into the placeholders at the end.
_MARK = {t: "\ue000" + chr(0xE010 + i) + "\ue001" for i, t in enumerate(PII_TYPES)}
_MAX_PASSES = 8  # each pass removes digits, so the passes end long before; this is a guard

# --- context --------------------------------------------------------------------------------


def _glued(text: str, start: int, end: int, left: str, right: str) -> bool:
    """True if the span continues a longer token: an alphanumeric neighbour, or one of the given
    separators followed (right) or preceded (left) by a digit."""
    if start > 0:
        c = text[start - 1]
        if c.isalnum() or c == "_" or (c in left and start > 1 and text[start - 2].isdigit()):
            return True
    if end < len(text):
        c = text[end]
        if c.isalnum() or c == "_" or (c in right and end + 1 < len(text) and text[end + 1].isdigit()):
            return True
    return False


# --- email ----------------------------------------------------------------------------------

# Letters of Latin-1, Latin Extended-A/B, Greek and Cyrillic, allowed in local parts and domain
# labels (written as literal characters: the class syntax is then the same in both engines).
_LETTERS = "\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0370-\u03ff\u0400-\u04ff"
_EMAIL = (
    f"[A-Za-z0-9_%+{_LETTERS}-](?:[A-Za-z0-9._%+{_LETTERS}-]{{0,62}}[A-Za-z0-9_%+{_LETTERS}-])?@"
    f"(?:[A-Za-z0-9{_LETTERS}](?:[A-Za-z0-9{_LETTERS}-]{{0,61}}[A-Za-z0-9{_LETTERS}])?\\.)+"
    r"[A-Za-z]{2,24}\b"
)
_FILE_EXT = frozenset(
    {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "heic", "avif"}
)


def _check_email(text: str, start: int, end: int) -> Span | None:
    s = text[start:end]
    local = s[: s.index("@")]
    if ".." in local or s.rsplit(".", 1)[1].lower() in _FILE_EXT or len(s) > 254:
        return None
    return start, end


# --- IBAN -----------------------------------------------------------------------------------

_IBAN = r"\b[A-Z]{2}[0-9]{2}(?: ?[0-9A-Z]){11,30}"
# IBAN length per country (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_valid(iban: str) -> bool:
    """Country length and ISO 7064 mod-97 check of a compact (unspaced, upper-case) IBAN."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum() or not iban.isascii():
        return False
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def _check_iban(text: str, start: int, end: int) -> Span | None:
    want = IBAN_LENGTHS.get(text[start : start + 2])
    if want is None:
        return None
    got, pos = 0, start
    while pos < end and got < want:  # cut the candidate at the country's length
        got += text[pos] != " "
        pos += 1
    if got < want or (pos < len(text) and text[pos].isalnum()):
        return None
    if not iban_valid(text[start:pos].replace(" ", "")):
        return None
    return start, pos


# --- payment cards --------------------------------------------------------------------------

_CARD = r"\b[0-9](?:[ -]?[0-9]){12,}\b"


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) checksum of a digit string."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _issuer_ok(d: str) -> bool:
    """Plausible issuer (IIN) prefix for a card number of this length."""
    n, p2, p3, p4, p6 = len(d), int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    if d[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if 2200 <= p4 <= 2204:  # Mir
        return 16 <= n <= 19
    if 300 <= p3 <= 305 or p2 in (36, 38, 39):  # Diners Club
        return 14 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925 or p2 == 62:
        return 16 <= n <= 19  # Discover, UnionPay
    return p2 in (50, 56, 57, 58) or d[0] == "6"  # Maestro (13-19 by the pattern)


def card_valid(number: str) -> bool:
    """Digits (separators ignored): 13-19 long, plausible issuer prefix, Luhn checksum."""
    d = number.replace(" ", "").replace("-", "")
    return 13 <= len(d) <= 19 and d.isdigit() and _issuer_ok(d) and luhn_valid(d)


def _card_layout_ok(sizes: list[int]) -> bool:
    if len(sizes) == 1:
        return True
    if sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return len(sizes) >= 4 and all(x == 4 for x in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _check_card(text: str, start: int, end: int) -> Span | None:
    s = text[start:end]
    if _glued(text, start, end, ".,", ".,"):
        return None
    seps = set(s) - set("0123456789")
    if len(seps) > 1:
        return None
    groups = s.split(seps.pop()) if seps else [s]
    # the whole run, or the run without one trailing group (``4111 ... 1111 12/25``)
    for k in (len(groups), len(groups) - 1):
        if k < 1:
            break
        sizes = [len(g) for g in groups[:k]]
        if _card_layout_ok(sizes) and card_valid("".join(groups[:k])):
            return start, start + sum(sizes) + k - 1
    return None


# --- SSN ------------------------------------------------------------------------------------

_SSN = r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b"


def ssn_valid(ssn: str) -> bool:
    """US SSN ``AAA-GG-SSSS``: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    area, group, serial = ssn.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _check_ssn(text: str, start: int, end: int) -> Span | None:
    if _glued(text, start, end, "-.,/", "-.,/") or not ssn_valid(text[start:end]):
        return None
    return start, end


# --- IP addresses ---------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = r"\b(?:" + _OCTET + r"\.){3}" + _OCTET + r"\b"
_IPV6 = r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})?"
_IP = _IPV6 + "|" + _IPV4
_VERSION_BEFORE = re.compile(
    r"(?:\b(?:v|ver|version|release|rel|build|rev|revision|section|sec|chapter|ch|clause|"
    r"article|art|appendix|figure|fig|table|tab|paragraph|para|item|step|rule)\.?|§)[ :]*\Z",
    re.IGNORECASE,
)


def _check_ip(text: str, start: int, end: int) -> Span | None:
    s = text[start:end]
    if ":" not in s:
        if _glued(text, start, end, ".", ".") or all(len(p) == 1 for p in s.split(".")):
            return None
        if _VERSION_BEFORE.search(text, max(0, start - 16), start):
            return None
        return start, end
    if s.endswith(":") and not s.endswith("::"):  # "addr: 2001:db8::1:" -> drop the colon
        s, end = s[:-1], end - 1
    if _glued(text, start, end, ":.", ":") or (start > 0 and text[start - 1] in ":."):
        return None
    groups = [g for g in re.split(r"[:.]", s) if g]
    if len(groups) < 3 or not any(c.isdigit() for c in s):
        return None
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return None
    return start, end


# --- phone numbers --------------------------------------------------------------------------

_EXT = r"(?: ?(?:[xX]|[eE]xt\.?|[eE]xtension) ?[0-9]{1,5})?\b"
_PHONE_PARTS = {
    "international": r"(?:\(\+[1-9][0-9]{0,3}(?: [0-9]{1,5})?\)|\+[1-9][0-9]{0,14})(?:(?:[ .-]|[ .-]?\([0-9]{1,5}\)[ .-]?)[0-9]{1,12}){0,7}"
    + _EXT,
    "nanp": r"(?:\b1[ .-])?(?:\([2-9][0-9]{2}\) ?|\b[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}" + _EXT,
    "national": r"(?:\(0[1-9][0-9]{0,4}\) ?|\b0[1-9][0-9]{0,4}[ -])[0-9]{2,8}(?:[ -][0-9]{2,8}){0,4}" + _EXT,
}
_EXT_TAIL = re.compile(r" ?(?:[xX]|[eE]xt\.?|[eE]xtension) ?[0-9]{1,5}\Z")
_NANP = re.compile(
    r"(?:1(?P<s0>[ .-]))?(?:\((?P<a1>[0-9]{3})\)(?P<s1> ?)|(?P<a2>[0-9]{3})(?P<s2>[ .-]))"
    r"(?P<x>[0-9]{3})(?P<s3>[ .-])[0-9]{4}"
)
_DIGIT_GROUP_END = re.compile(r"[0-9]+\)?")
_SPACED = re.compile(r"[0-9] [0-9]")


def _nanp_codes_ok(area: str, exchange: str) -> bool:
    """Area code NPA: [2-9][0-8]X, not N11; exchange NXX: [2-9]XX, not N11."""
    return (
        area[0] in "23456789"
        and area[1] != "9"
        and area[1:] != "11"
        and exchange[0] in "23456789"
        and exchange[1:] != "11"
    )


def _intl_ok(body: str) -> bool:
    if body.count("(") != body.count(")"):
        return False
    d = "".join(c for c in body.replace("(0)", "") if c.isdigit())
    if not 8 <= len(d) <= 15:
        return False
    if d[0] == "1":  # NANP behind +1
        return len(d) == 11 and _nanp_codes_ok(d[1:4], d[4:7])
    return not (d[0] == "7" and len(d) != 11)


def _check_phone(text: str, start: int, end: int) -> Span | None:
    s = text[start:end]
    ext = _EXT_TAIL.search(s)
    body = s[: ext.start()] if ext else s
    # a space continues the number only if the number itself is spaced ("212 555 1234 5678");
    # "CA 91360 805-492-9973" is a ZIP code and a phone
    space = " " if _SPACED.search(body) else ""
    if _glued(text, start, end, "-./+" + space, "-." + space) or (start > 0 and text[start - 1] in "+$€£"):
        return None
    if body[0] == "+" or body.startswith("(+"):
        if _intl_ok(body):
            return start, end
        # retry without the last digit group ("+44 20 7946 0958 2024")
        ends = [m.end() for m in _DIGIT_GROUP_END.finditer(body)]
        if len(ends) > 2 and _intl_ok(body[: ends[-2]]):
            return start, start + ends[-2]
        return None
    if body[0] == "0" or body.startswith("(0"):
        d = "".join(c for c in body if c.isdigit())
        seps = {c for c in body if c in " -"}
        return (start, end) if 10 <= len(d) <= 11 and (len(seps) == 1 or "(" in body) else None
    m = _NANP.fullmatch(body)
    if m is None:
        return None
    area = m["a1"] or m["a2"]
    if not _nanp_codes_ok(area, m["x"]):
        return None
    if m["a2"] and not (m["s2"] == m["s3"] or (m["s2"] == " " and m["s3"] == "-")):
        return None
    if m["s2"] == m["s3"] == " " and all(g[-1] == "0" for g in body.split(" ")[-3:]):
        return None  # "500 750 1000": round quantities in a table, not a phone
    return start, end


# --- detectors ------------------------------------------------------------------------------


def _rust(pattern: str) -> str:
    """The Rust spelling of a shared pattern: ASCII word boundaries, as Python's ``re.ASCII``."""
    return pattern.replace(r"\b", r"(?-u:\b)")


@dataclass(frozen=True)
class _Detector:
    """One PII type: a shared pattern and the Python check of each match."""

    kind: str
    pattern: str
    check: Check
    rust: str = field(init=False)
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rust", _rust(self.pattern))
        object.__setattr__(self, "regex", re.compile(self.pattern, re.ASCII))

    def find(self, text: str) -> list[Span]:
        """Accepted spans in ``text``, left to right, non-overlapping."""
        spans: list[Span] = []
        pos = 0
        search = self.regex.search
        while (m := search(text, pos)) is not None:
            span = self.check(text, m.start(), m.end())
            if span is None:
                pos = m.end() if m.end() > m.start() else m.start() + 1
            else:
                spans.append(span)
                pos = max(span[1], span[0] + 1)
        return spans

    def locate(self, text: str, cands: list[str]) -> list[Span]:
        """Same result as :meth:`find`, guided by the Rust matches ``cands`` (in order).

        Each candidate is found with ``str.find`` and confirmed by an anchored match, so Python
        never scans the row with the regex; it falls back to :meth:`find` when the engines
        disagree or a check shortened a match (the rest of it must then be rescanned).
        """
        spans: list[Span] = []
        pos = 0
        match = self.regex.match
        for cand in cands:
            i = text.find(cand, pos)
            while i != -1:
                m = match(text, i)
                if m is not None and m.end() == i + len(cand):
                    break
                i = text.find(cand, i + 1)
            if i == -1:
                return self.find(text)
            end = i + len(cand)
            span = self.check(text, i, end)
            if span is not None:
                if span != (i, end):
                    return self.find(text)
                spans.append(span)
            pos = end
        return spans

    def run(self, work: pl.Series) -> tuple[pl.Series, pl.Series, pl.Series] | None:
        """Redact this type in ``work`` (markers in place of the PII).

        Returns:
            ``(rows, new_texts, counts)`` for the rows where PII was found, or None.
        """
        idx = work.str.contains(self.rust).arg_true()
        if idx.len() == 0:
            return None
        cands = pl.DataFrame({"row": idx, "cands": work.gather(idx).str.extract_all(self.rust)})
        pairs = cands.explode("cands").drop_nulls("cands")
        unique = pairs.get_column("cands").unique().to_list()
        valid = [c for c in unique if self.find(c)]  # context-free: a superset of the real hits
        if not valid:
            return None
        rows = pairs.filter(pl.col("cands").is_in(valid)).get_column("row").unique(maintain_order=True)
        todo = cands.join(rows.to_frame("row"), on="row", how="semi", maintain_order="left")
        mark = _MARK[self.kind]
        changed: list[int] = []
        new_texts: list[str] = []
        counts: list[int] = []
        for row, text, row_cands in zip(
            todo.get_column("row").to_list(),
            work.gather(todo.get_column("row")).to_list(),
            todo.get_column("cands").to_list(),
        ):
            spans = self.locate(text, row_cands)
            if not spans:  # every candidate was rejected in context
                continue
            parts: list[str] = []
            last = 0
            for a, b in spans:
                parts += (text[last:a], mark)
                last = b
            parts.append(text[last:])
            changed.append(row)
            new_texts.append("".join(parts))
            counts.append(len(spans))
        if not changed:
            return None
        return (
            pl.Series(changed, dtype=idx.dtype),
            pl.Series(new_texts, dtype=pl.String),
            pl.Series(counts, dtype=pl.Int32),
        )


def _detectors(phone_formats: tuple[str, ...]) -> dict[str, _Detector]:
    phone = "|".join(_PHONE_PARTS[f] for f in PHONE_FORMATS if f in phone_formats)
    return {
        "email": _Detector("email", _EMAIL, _check_email),
        "iban": _Detector("iban", _IBAN, _check_iban),
        "credit_card": _Detector("credit_card", _CARD, _check_card),
        "ssn": _Detector("ssn", _SSN, _check_ssn),
        "ip": _Detector("ip", _IP, _check_ip),
        "phone": _Detector("phone", phone, _check_phone),
    }


# --- the step -------------------------------------------------------------------------------


@register("pii.redact")
@dataclass(kw_only=True)
class PiiRedact(Step):
    """Replace e-mails, phones, IPs, card numbers, SSNs and IBANs with typed placeholders.

    Args:
        types: PII types to handle (default all): ``email``, ``iban``, ``credit_card``, ``ssn``,
            ``ip``, ``phone``.
        mode: ``"redact"`` rewrites ``text``; ``"detect"`` only counts and annotates.
        placeholders: per-type replacement text overriding the defaults (``<EMAIL>``, ...).
        phone_formats: phone layouts to look for: ``international``, ``nanp``, ``national``.

    Adds ``pii_count`` (Int32, spans found in the row) and ``pii_types`` (sorted distinct types
    found). Counters: spans per type, every type present.

    Example:
        >>> import polars as pl
        >>> out = PiiRedact().apply(pl.DataFrame({"text": ["mail bob@example.com now"]}))
        >>> out.frame["text"][0], out.counters["email"]
        ('mail <EMAIL> now', 1)
    """

    summary: ClassVar[str] = "redact or count e-mails, phones, IPs, cards (Luhn), SSNs, IBANs (mod 97)"

    types: tuple[str, ...] = PII_TYPES
    mode: str = "redact"
    placeholders: dict[str, str] | None = None
    phone_formats: tuple[str, ...] = PHONE_FORMATS

    def __post_init__(self) -> None:
        self.types = _names(self.name, "types", self.types, PII_TYPES)
        self.phone_formats = _names(self.name, "phone_formats", self.phone_formats, PHONE_FORMATS)
        if self.mode not in MODES:
            msg = f"{self.name}: option 'mode' = {self.mode!r} is not valid; valid: {choices(MODES)}"
            raise ConfigError(msg)
        if self.placeholders is not None:
            if not isinstance(self.placeholders, dict):
                msg = f"{self.name}: option 'placeholders' must be a mapping, got {self.placeholders!r}"
                raise ConfigError(msg)
            for key, value in self.placeholders.items():
                if key not in PII_TYPES:
                    msg = f"{self.name}: unknown type {key!r} in 'placeholders'; valid: {choices(PII_TYPES)}"
                    raise ConfigError(msg)
                if not isinstance(value, str):
                    msg = f"{self.name}: placeholder for {key!r} must be a string, got {value!r}"
                    raise ConfigError(msg)
        detectors = _detectors(self.phone_formats)
        self._active = [detectors[t] for t in PII_TYPES if t in self.types]

    def output_columns(self) -> dict[str, pa.DataType]:
        return {"pii_count": pa.int32(), "pii_types": pa.list_(pa.string())}

    def placeholder(self, kind: str) -> str:
        """The replacement text for ``kind``."""
        return (self.placeholders or {}).get(kind, PLACEHOLDERS[kind])

    def _pass(self, work: pl.Series) -> dict[str, tuple[pl.Series, pl.Series]]:
        """One pass of every detector over ``work`` (rewritten in place with markers).

        Returns ``{kind: (rows, counts)}`` for the types found.
        """
        found: dict[str, tuple[pl.Series, pl.Series]] = {}
        for det in self._active:
            hit = det.run(work)
            if hit is not None:
                rows, new_texts, row_counts = hit
                work.scatter(rows, new_texts)
                found[det.kind] = (rows, row_counts)
        return found

    def apply(self, frame: pl.DataFrame) -> StepOutput:
        text = frame.get_column("text")
        n = frame.height
        work = text.clone()  # rewritten in place with markers
        counts = {d.kind: pl.zeros(n, pl.Int32, eager=True) for d in self._active}
        # Repeat on the rows that changed until nothing more is found: a span rejected because it
        # touched the digits of another type's span is judged again once that span is a marker.
        # This makes the step idempotent; a second pass is rare and only sees changed rows.
        idx: pl.Series | None = None  # rows of this pass; None = all
        for _ in range(_MAX_PASSES):
            sub = work if idx is None else work.gather(idx)
            found = self._pass(sub)
            if not found:
                break
            local = pl.concat([rows for rows, _ in found.values()]).unique().sort()
            for kind, (rows, row_counts) in found.items():
                at = rows if idx is None else idx.gather(rows)
                counts[kind].scatter(at, counts[kind].gather(at) + row_counts)
            if idx is None:
                idx = local
            else:
                work.scatter(idx.gather(local), sub.gather(local))
                idx = idx.gather(local)
        cols = pl.DataFrame({k: counts[k] for k in sorted(counts)}, height=n)
        total = cols.select(pl.sum_horizontal(pl.all()).cast(pl.Int32).alias("pii_count")).to_series()
        found_types = cols.select(
            pl.concat_list([pl.when(pl.col(k) > 0).then(pl.lit(k)) for k in cols.columns])
            .list.drop_nulls()
            .alias("pii_types")
        ).to_series()
        if self.mode == "redact":
            hit = (total > 0).arg_true()
            if hit.len():
                marks = [_MARK[d.kind] for d in self._active]
                values = [self.placeholder(d.kind) for d in self._active]
                text = text.clone().scatter(hit, work.gather(hit).str.replace_many(marks, values))
        out = frame.with_columns(
            text.alias("text"), total.alias("pii_count"), found_types.cast(pl.List(pl.String))
        )
        counters = {t: int(counts[t].sum()) if t in counts else 0 for t in PII_TYPES}
        logger.debug("pii.redact: %s", counters)
        return StepOutput(out, counters=counters)


def _names(step: str, option: str, value: object, valid: tuple[str, ...]) -> tuple[str, ...]:
    """Validate a tuple of names against ``valid``; ConfigError naming the bad value."""
    if isinstance(value, str) or not isinstance(value, tuple | list):
        msg = f"{step}: option {option!r} must be a list of names, got {value!r}; valid: {choices(valid)}"
        raise ConfigError(msg)
    if not value:
        msg = f"{step}: option {option!r} is empty; valid: {choices(valid)}"
        raise ConfigError(msg)
    for v in value:
        if v not in valid:
            msg = f"{step}: unknown {option.rstrip('s')} {v!r} in {option!r}; valid: {choices(valid)}"
            raise ConfigError(msg)
    return tuple(dict.fromkeys(value))
