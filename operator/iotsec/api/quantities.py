"""Kubernetes resource quantities (`64Mi`, `20Gi`, `1G`, `500k`) as whole bytes."""

from __future__ import annotations

import re

_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def quantity_bytes(text: str) -> int:
    """Bytes in a quantity such as 64Mi; decimal exponents and milli-units are not sizes and are refused."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size such as 512Mi, 20Gi or 1G")
    number, suffix = match.groups()
    return int(float(number) * _SUFFIX[suffix or ""])
