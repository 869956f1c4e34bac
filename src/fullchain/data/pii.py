"""PII redaction: e-mail addresses, phone numbers, IP addresses and ID-card-like numbers are
replaced by a placeholder, and what was replaced is counted per kind."""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

REPLACEMENTS = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>", "id_number": "<ID>"}

_PATTERNS = {
    "email": re.compile(r"\b[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    # ID-card-like: Chinese resident ID (17 digits + digit/X), US SSN, 13-19 digit card numbers
    "id_number": re.compile(r"(?<![\d-])(?:\d{17}[\dXx]|\d{3}-\d{2}-\d{4}|"
                            r"(?:\d{4}[ -]?){3}\d{1,7})(?![\d-])"),
    "ip": re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])|"
                     r"\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b"),
    # +country code or a parenthesised/area-code grouped number, or a Chinese mobile number
    "phone": re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
                        r"\d{3,4}[ .-]\d{3,4}(?![\w-])|(?<!\d)1[3-9]\d{9}(?!\d)"),
}


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _is_id(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    if "-" in match and len(digits) == 9:  # SSN-shaped
        return True
    if len(digits) == 18 or match[-1] in "Xx":  # Chinese resident ID
        return True
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)  # payment-card-like


def redact(text: str, kinds: list[str]) -> tuple[str, Counter]:
    """Replace each PII match of ``kinds`` (in the order id_number, email, ip, phone) with its
    placeholder; return the new text and the count replaced per kind."""
    counts: Counter = Counter()
    for kind in ("id_number", "email", "ip", "phone"):
        if kind not in kinds:
            continue

        def sub(m: re.Match, kind: str = kind) -> str:
            value = m.group(0)
            if (kind == "ip" and not _valid_ip(value)) or (kind == "id_number" and
                                                           not _is_id(value)):
                return value
            counts[kind] += 1
            return REPLACEMENTS[kind]

        text = _PATTERNS[kind].sub(sub, text)
    return text, counts
