"""The agencies a collector serves, which of them owns each node, and who owns a list.

A collector serves one or more agencies (`agencies:` in its config), in order; each names
the nodes it owns by fnmatch globs on node ids, and the first whose globs match owns the
node.  A partner's list held here is named `<owner>.<list>`; any other list is the
agency's own.  Without `agencies:` the collector serves one agency, `local`, owning every
node: what every config from before agencies meant.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.core.agency import LOCAL_AGENCY, check_agency

DEFAULT_AGENCY = LOCAL_AGENCY  # the one agency of a collector whose config names none
_check_agency = check_agency


def is_agency_id(name: str) -> bool:
    """Whether `name` has the shape of an agency id (the default `local` included)."""
    try:
        _check_agency(name)
    except ValueError:
        return False
    return True


def list_owner(list_name: str, agency: str, known: Sequence[str] | None = None) -> str:
    """The agency that owns list `list_name`, held by (or matched for) `agency`: a list named
    `<a>.<rest>` is `a`'s copy where `a` is an agency (in `known`, or of an agency's shape
    when `known` is None), any other `agency`'s own."""
    prefix, dot, _ = (list_name or "").partition(".")
    if dot and prefix != DEFAULT_AGENCY and (prefix in known if known is not None
                                             else is_agency_id(prefix)):  # fmt: skip
        return prefix
    return agency


class AgencyConfig(BaseModel):
    """One agency this collector serves, and the nodes (globs on node ids) it owns."""

    model_config = ConfigDict(extra="forbid")

    name: str
    nodes: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_agency(v)

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, v: list[str]) -> list[str]:
        for glob in v:
            if not glob or len(glob) > 200:
                raise ValueError("a node glob is 1-200 characters")
        return v

    def owns(self, node: str) -> bool:
        return any(fnmatch.fnmatchcase(node, glob) for glob in self.nodes)


def default_agencies() -> list[AgencyConfig]:
    return [AgencyConfig(name=DEFAULT_AGENCY, nodes=["*"])]


def check_agencies(agencies: list[AgencyConfig]) -> list[AgencyConfig]:
    """At least one agency, each named once."""
    if not agencies:
        raise ValueError("name at least one agency (or leave agencies out: one, 'local')")
    seen: set[str] = set()
    for a in agencies:
        if a.name in seen:
            raise ValueError(f"agency {a.name} is named twice")
        seen.add(a.name)
    return agencies


def agency_of_node(agencies: Sequence[AgencyConfig], node: str) -> str | None:
    """The first agency whose globs match `node`; None when none does."""
    for a in agencies:
        if a.owns(node):
            return a.name
    return None
