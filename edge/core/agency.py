"""An agency's id: a country code, a dash and a short name ('lt-vsat', 'pl-sg', 'lv-vp')."""

from __future__ import annotations

import re

# 'local' is the one agency of a collector whose config names none (the default).
LOCAL_AGENCY = "local"
_AGENCY = re.compile(r"^[a-z]{2}-[a-z0-9]{1,30}$")


def check_agency(name: object) -> str:
    """`name` if it is an agency id (or 'local'); ValueError saying what one looks like."""
    if isinstance(name, str) and (name == LOCAL_AGENCY or _AGENCY.match(name)):
        return name
    raise ValueError(
        f"{name!r} is not an agency id: a two-letter country code, '-' and 1-30 of a-z, 0-9 "
        "(e.g. 'lt-vsat', 'pl-sg')"
    )
