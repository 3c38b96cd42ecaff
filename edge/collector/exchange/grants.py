"""What the exchange asks of the agreements: the plan's `Agreements` methods it calls.

The real `edge.collector.agreements.Agreements` satisfies this protocol; the exchange is
typed against it so that it needs nothing else of the agreements module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from edge.core.agency import LOCAL_AGENCY
from edge.core.agency import check_agency as core_check_agency


def check_agency(name: object) -> str:
    """An agency id of a partner (`lt-vsat`; never the default `local`); ValueError otherwise."""
    if name == LOCAL_AGENCY:
        raise ValueError("the default agency 'local' cannot exchange: name the agency "
                         "(e.g. lt-vsat) in the collector's agencies:")
    return core_check_agency(name)


class GrantLike(Protocol):
    """The fields of a grant the exchange reads."""

    @property
    def giver(self) -> str: ...
    @property
    def receiver(self) -> str: ...
    @property
    def lists(self) -> Sequence[str]: ...
    @property
    def categories(self) -> Sequence[str]: ...
    @property
    def hits_back(self) -> bool: ...
    @property
    def search(self) -> bool: ...


class Grants(Protocol):
    """The agreements in force, as the exchange reads them (`Agreements`' method names)."""

    @property
    def agencies(self) -> Mapping[str, Any]: ...

    def grants(
        self, giver: str, receiver: str, at: dt.datetime | None = None
    ) -> Sequence[GrantLike]: ...

    def list_granted(
        self, owner: str, list_name: str, receiver: str, category: str | None = None,
        at: dt.datetime | None = None,
    ) -> bool: ...

    def hits_back(
        self, owner: str, list_name: str, receiver: str, at: dt.datetime | None = None
    ) -> bool: ...

    def partners(self, agency: str, at: dt.datetime | None = None) -> set[str]: ...

    def sees_camera(self, viewer: str, owner: str, node: str, camera: str = "",
                    at: dt.datetime | None = None) -> bool: ...


def may_hold_list(grants: Grants, owner: str, list_name: str, receiver: str) -> bool:
    """Whether `receiver` may hold a copy of `owner`'s list at all: granted by name, or
    some of its entries by category (the entries themselves are checked one by one)."""
    if grants.list_granted(owner, list_name, receiver):
        return True
    return any(g.categories for g in grants.grants(owner, receiver))


def entry_granted(
    grants: Grants, owner: str, list_name: str, receiver: str, category: str
) -> bool:
    """Whether one entry (of `category`) of `owner`'s list goes to `receiver`."""
    return grants.list_granted(owner, list_name, receiver, category)
