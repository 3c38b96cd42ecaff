"""Agreements between agencies, as data: what each grants the other, from and until when.

A directory holds `agencies.yaml` (every agency the agreements may name) and one `*.yaml`
file per agreement (see config/agreements/ for examples to copy).  `Agreements.load` checks
it all and gives an immutable snapshot that answers what is granted at a time;
`AgreementsWatcher` reloads it when its files change, and notices agreements coming into
force or expiring, without a restart.

Times are UTC: a time must carry its zone ('2026-01-01T00:00:00Z', '+02:00'); a bare date
is a whole UTC day, so `valid_from: 2026-01-01` starts at its midnight and
`valid_until: 2027-12-31` ends at the next one.  An agreement is in force from `valid_from`
(included) until `valid_until` (excluded).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    RootModel,
    StrictBool,
)

from edge.core.agency import LOCAL_AGENCY, check_agency
from edge.core.config_files import ConfigError, load_yaml_model
from edge.core.times import UTC, iso, parse_iso, utc_now
from edge.core.watchlist.entry import CATEGORIES, FieldError, check_list_name

AGENCIES_FILE = "agencies.yaml"
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
_GLOB_CHARS = _ID_CHARS | frozenset("*?[]!")


# ---- the files, as pydantic checks them (one file at a time, no I/O) ----


def _agency(name: object) -> str:
    name = check_agency(name)
    if name == LOCAL_AGENCY:
        raise ValueError(f"{LOCAL_AGENCY!r} is no agency of an agreement: use the agency's id")
    return name


def _list_name(name: object) -> str:
    try:
        return check_list_name(name)
    except FieldError as e:
        raise ValueError(e.message) from None


def _category(name: object) -> str:
    if name not in CATEGORIES:
        raise ValueError(f"{name!r} is not a category (one of {', '.join(CATEGORIES)})")
    return str(name)


def _camera_glob(glob: object) -> str:
    """'NODE' or 'NODE/CAMERA', each an id or an fnmatch glob of one ('pl-*', 'pl-01/cam?')."""
    parts = glob.split("/") if isinstance(glob, str) else []
    if not 1 <= len(parts) <= 2 or not all(
        0 < len(p) <= 64 and set(p) <= _GLOB_CHARS for p in parts
    ):
        raise ValueError(
            f"{glob!r} is not a camera glob: NODE or NODE/CAMERA, each of letters, digits, "
            "'.', '_', ':', '-' and the wildcards * ? [ ] (e.g. 'pl-*', 'pl-bialystok/cam1')"
        )
    return str(glob)


def _reference(ref: object) -> str:
    if not isinstance(ref, str) or not 0 < len(ref) <= 80 or not set(ref) <= _ID_CHARS | {"/"}:
        raise ValueError(
            f"{ref!r} is not an agreement reference: 1-80 of letters, digits, '.', '_', ':', "
            "'-', '/' (e.g. 'LT-PL-2026-017')"
        )
    return ref


def _moment(value: object, *, end: bool) -> dt.datetime:
    """An aware UTC time from YAML (a datetime, a date, or ISO text); a date is a whole day."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = dt.date.fromisoformat(text) if len(text) == 10 else parse_iso(text, None)
        except ValueError:
            raise ValueError(f"{value!r} is not a time (e.g. 2026-01-01T00:00:00Z)") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(
                f"{value.isoformat()} has no zone: write it in UTC with a Z "
                "(2026-01-01T00:00:00Z) or with its offset (+02:00)"
            )
        return value.astimezone(UTC)
    if isinstance(value, dt.date):
        midnight = dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
        return midnight + dt.timedelta(days=1) if end else midnight
    raise ValueError(f"must be a time (e.g. 2026-01-01T00:00:00Z), got {value!r}")


AgencyId = Annotated[str, AfterValidator(_agency)]
ListName = Annotated[str, AfterValidator(_list_name)]
Category = Annotated[str, AfterValidator(_category)]
CameraGlob = Annotated[str, AfterValidator(_camera_glob)]
Reference = Annotated[str, AfterValidator(_reference)]
Start = Annotated[dt.datetime, PlainValidator(lambda v: _moment(v, end=False))]
End = Annotated[dt.datetime, PlainValidator(lambda v: _moment(v, end=True))]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgencyModel(_Strict):
    """One agency in agencies.yaml."""

    name: str = Field(min_length=1, max_length=200)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class AgenciesFile(RootModel[dict[AgencyId, AgencyModel]]):
    """agencies.yaml: agency id -> its name and country."""


class GrantModel(_Strict):
    """What `from` grants `to` under an agreement."""

    giver: AgencyId = Field(alias="from")
    receiver: AgencyId = Field(alias="to")
    lists: list[ListName] = Field(default_factory=list)
    categories: list[Category] = Field(default_factory=list)
    hits_back: StrictBool = False
    cameras: list[CameraGlob] = Field(default_factory=list)
    search: StrictBool = False


class AgreementModel(_Strict):
    """One agreement file."""

    agreement: Reference
    title: str = Field(min_length=1, max_length=300)
    parties: list[AgencyId] = Field(min_length=2)
    valid_from: Start
    valid_until: End | None = None
    grants: list[GrantModel] = Field(default_factory=list)


# ---- the snapshot: what the checked files say ----


@dataclass(frozen=True)
class AgencyInfo:
    id: str
    name: str
    country: str


@dataclass(frozen=True)
class Grant:
    """What `giver` grants `receiver` under agreement `agreement`, while it is in force.

    `lists` are the giver's own list names the receiver's cameras may match; `categories`
    add the entries of those categories on any of the giver's lists.  `hits_back`: hits on
    them go back to the giver.  `cameras`: globs of the giver's nodes ('pl-*') or cameras
    ('pl-01/cam1') whose place and health the receiver sees; with `search` it may search
    those nodes' reads.
    """

    giver: str
    receiver: str
    lists: tuple[str, ...]
    categories: tuple[str, ...]
    hits_back: bool
    cameras: tuple[str, ...]
    search: bool
    agreement: str
    valid_from: dt.datetime
    valid_until: dt.datetime | None

    def in_force(self, at: dt.datetime) -> bool:
        return self.valid_from <= at and (self.valid_until is None or at < self.valid_until)

    def covers_list(self, list_name: str, category: str | None = None) -> bool:
        return list_name in self.lists or (category is not None and category in self.categories)

    def covers_camera(self, node: str, camera: str = "") -> bool:
        """A NODE glob covers all of a node's cameras, a NODE/CAMERA glob those it matches;
        camera '' asks about the node as a whole (which 'pl-01/*' covers, 'pl-01/cam1' not)."""
        return any(
            fnmatchcase(f"{node}/{camera}" if "/" in g else node, g) for g in self.cameras
        )

    def covers_node(self, node: str) -> bool:
        """Whether any of `cameras` is on `node` (the nodes `search` opens)."""
        return any(fnmatchcase(node, g.split("/")[0]) for g in self.cameras)

    def summary(self) -> str:
        """'lists stolen-pl; categories stolen_vehicle; hits back; cameras pl-*; search'."""
        parts = [f"{k} {', '.join(v)}" for k, v in
                 (("lists", self.lists), ("categories", self.categories),
                  ("cameras", self.cameras)) if v]  # fmt: skip
        if self.hits_back:
            parts.insert(2 if self.categories else 1, "hits back")
        if self.search:
            parts.append("search")
        return "; ".join(parts) or "nothing"


@dataclass(frozen=True)
class Agreement:
    reference: str
    title: str
    parties: tuple[str, ...]
    valid_from: dt.datetime
    valid_until: dt.datetime | None
    grants: tuple[Grant, ...]
    file: str  # its file's name in the directory

    def in_force(self, at: dt.datetime) -> bool:
        return self.valid_from <= at and (self.valid_until is None or at < self.valid_until)

    def period(self) -> str:
        until = f" until {iso(self.valid_until, 'seconds')}" if self.valid_until else ""
        return f"from {iso(self.valid_from, 'seconds')}{until}"


def _at(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return utc_now()
    if at.tzinfo is None:
        raise ValueError("a time to ask agreements about must be timezone-aware")
    return at


@dataclass(frozen=True)
class Agreements:
    """An immutable snapshot of an agreements directory; every question takes a time `at`
    (aware; now when None) and answers from the agreements in force then."""

    agencies: Mapping[str, AgencyInfo] = field(default_factory=lambda: MappingProxyType({}))
    agreements: tuple[Agreement, ...] = ()

    @classmethod
    def empty(cls) -> Agreements:
        return cls()

    @classmethod
    def load(cls, directory: str | Path) -> Agreements:
        """The agreements in `directory`; `ConfigError` ('FILE: key: message') at the first
        file that is wrong."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ConfigError(directory, None, "not a directory of agreements")
        agencies_file = load_yaml_model(directory / AGENCIES_FILE, AgenciesFile)
        agencies = {k: AgencyInfo(k, v.name, v.country) for k, v in agencies_file.root.items()}
        agreements: list[Agreement] = []
        seen: dict[str, str] = {}
        for path in agreement_files(directory):
            model = load_yaml_model(path, AgreementModel)
            problems = _problems(model, agencies)
            if model.agreement in seen:
                problems.insert(0, ("agreement", f"{model.agreement!r} is also the reference "
                                                 f"in {seen[model.agreement]}"))  # fmt: skip
            if problems:
                raise ConfigError(path, *problems[0], *problems[1:])
            seen[model.agreement] = path.name
            agreements.append(_agreement(model, path.name))
        return cls(MappingProxyType(agencies), tuple(agreements))

    # ---- questions ----

    def in_force(self, at: dt.datetime | None = None) -> list[Agreement]:
        at = _at(at)
        return [a for a in self.agreements if a.in_force(at)]

    def grants(self, giver: str, receiver: str, at: dt.datetime | None = None) -> list[Grant]:
        """What `giver` grants `receiver` under the agreements in force at `at`."""
        at = _at(at)
        return [
            g
            for a in self.agreements
            for g in a.grants
            if g.giver == giver and g.receiver == receiver and g.in_force(at)
        ]

    def list_granted(
        self, owner: str, list_name: str, receiver: str, category: str | None = None,
        at: dt.datetime | None = None,
    ) -> bool:  # fmt: skip
        """Whether `receiver`'s cameras may match `owner`'s list `list_name` (its entries of
        `category`, where given).  `list_name` may be qualified ('pl-sg.stolen-pl')."""
        name = _unqualified(owner, list_name)
        return any(g.covers_list(name, category) for g in self.grants(owner, receiver, at))

    def shared_lists(self, giver: str, receiver: str, lists: Iterable[tuple[str, str | None]],
                     at: dt.datetime | None = None) -> list[tuple[str, str | None]]:  # fmt: skip
        """Those of `giver`'s (list, category) pairs that `receiver` gets, in order, once each."""
        grants = self.grants(giver, receiver, at)
        out: dict[tuple[str, str | None], None] = {}
        for name, category in lists:
            if any(g.covers_list(_unqualified(giver, name), category) for g in grants):
                out[(name, category)] = None
        return list(out)

    def hits_back(self, owner: str, list_name: str, receiver: str, at: dt.datetime | None = None,
                  *, category: str | None = None) -> bool:  # fmt: skip
        """Whether `receiver`'s hits on `owner`'s list (entry of `category`) go back to it."""
        name = _unqualified(owner, list_name)
        return any(
            g.hits_back and g.covers_list(name, category) for g in self.grants(owner, receiver, at)
        )

    def sees_camera(self, viewer: str, owner: str, node: str, camera: str = "",
                    at: dt.datetime | None = None) -> bool:  # fmt: skip
        """Whether `viewer` sees the place and health of `owner`'s node (camera); an agency
        always sees its own."""
        if viewer == owner:
            return True
        return any(g.covers_camera(node, camera) for g in self.grants(owner, viewer, at))

    def may_search(self, viewer: str, owner: str, node: str, at: dt.datetime | None = None) -> bool:
        """Whether `viewer` may search the reads of `owner`'s node; an agency its own always."""
        if viewer == owner:
            return True
        return any(g.search and g.covers_node(node) for g in self.grants(owner, viewer, at))

    def partners(self, agency: str, at: dt.datetime | None = None) -> set[str]:
        """The agencies `agency` grants to or receives from under agreements in force."""
        at = _at(at)
        out: set[str] = set()
        for a in self.agreements:
            for g in a.grants:
                if agency in (g.giver, g.receiver) and g.in_force(at):
                    out.add(g.receiver if g.giver == agency else g.giver)
        return out

    def next_change(self, after: dt.datetime) -> dt.datetime | None:
        """The first valid_from or valid_until strictly after `after`."""
        after = _at(after)
        moments = [t for a in self.agreements for t in (a.valid_from, a.valid_until)
                   if t is not None and t > after]  # fmt: skip
        return min(moments, default=None)

    # ---- what changed, for the audit ----

    def describe_changes(self, old: Agreements) -> list[str]:
        """What differs from `old`, a line each ('agreement X added', '... revoked ...')."""
        lines = _agency_changes(old.agencies, self.agencies)
        before = {a.reference: a for a in old.agreements}
        after = {a.reference: a for a in self.agreements}
        files = {a.file for a in self.agreements}
        for ref, a in after.items():
            if ref not in before:
                lines.append(f"agreement {ref} added ({a.file}): {a.title}; "
                             f"{', '.join(a.parties)}; {a.period()}")  # fmt: skip
                lines += [f"agreement {ref} grant {g.giver} -> {g.receiver}: {g.summary()}"
                          for g in a.grants]  # fmt: skip
            else:
                lines += _agreement_changes(before[ref], a)
        for ref, a in before.items():
            if ref not in after:
                why = f"no longer in {a.file}" if a.file in files else "file removed"
                lines.append(f"agreement {ref} revoked ({why})")
        return lines

    def describe_transitions(self, since: dt.datetime, until: dt.datetime) -> list[str]:
        """Agreements that came into force or expired in (since, until], in time order."""
        events: list[tuple[dt.datetime, str]] = []
        for a in self.agreements:
            if since < a.valid_from <= until:
                when = iso(a.valid_from, "seconds")
                events.append((a.valid_from, f"agreement {a.reference} in force (from {when})"))
            if a.valid_until is not None and since < a.valid_until <= until:
                when = iso(a.valid_until, "seconds")
                events.append((a.valid_until, f"agreement {a.reference} expired (until {when})"))
        return [line for _, line in sorted(events)]


def agreement_files(directory: Path) -> list[Path]:
    """The agreement files in `directory`: its `*.yaml` but agencies.yaml and hidden ones."""
    return sorted(
        p for p in directory.glob("*.yaml")
        if p.name != AGENCIES_FILE and not p.name.startswith(".") and p.is_file()
    )  # fmt: skip


def _unqualified(owner: str, list_name: str) -> str:
    return list_name.removeprefix(f"{owner}.")


def _problems(model: AgreementModel, agencies: Mapping[str, AgencyInfo]) -> list[tuple[str, str]]:
    """What is wrong with an agreement that its file alone cannot say: (key, message)."""
    problems: list[tuple[str, str]] = []
    known = ", ".join(sorted(agencies)) or "none"
    for i, party in enumerate(model.parties):
        if party not in agencies:
            message = f"unknown agency {party!r} (agencies.yaml names: {known})"
            problems.append((f"parties.{i}", message))
        elif party in model.parties[:i]:
            problems.append((f"parties.{i}", f"{party!r} is named twice"))
    if model.valid_until is not None and model.valid_until <= model.valid_from:
        until, since = iso(model.valid_until, "seconds"), iso(model.valid_from, "seconds")
        problems.append(("valid_until", f"{until} is not after valid_from {since}"))
    directions: set[tuple[str, str]] = set()
    for i, g in enumerate(model.grants):
        key = f"grants.{i}"
        for name, agency in (("from", g.giver), ("to", g.receiver)):
            if agency not in model.parties:
                message = f"{agency!r} is not a party (parties: {', '.join(model.parties)})"
                problems.append((f"{key}.{name}", message))
        if g.giver == g.receiver:
            problems.append((f"{key}.to", f"{g.receiver!r} cannot grant to itself"))
        if (g.giver, g.receiver) in directions:
            problems.append((key, f"a second grant {g.giver} -> {g.receiver}: "
                                  "write one grant per direction"))  # fmt: skip
        directions.add((g.giver, g.receiver))
        for j, name in enumerate(g.lists):
            if name.split(".")[0] in agencies:
                message = f"{name!r} is a partner's list; a grant names the giver's own lists"
                problems.append((f"{key}.lists.{j}", message))
        if not (g.lists or g.categories or g.cameras):
            problems.append((key, "grants nothing: name lists, categories or cameras"))
        if g.hits_back and not (g.lists or g.categories):
            problems.append((f"{key}.hits_back", "needs lists or categories"))
        if g.search and not g.cameras:
            problems.append((f"{key}.search", "needs cameras (the nodes whose reads are searched)"))
    return problems


def _agreement(model: AgreementModel, file: str) -> Agreement:
    def once(items: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(items))

    grants = tuple(
        Grant(giver=g.giver, receiver=g.receiver, lists=once(g.lists),
              categories=once(g.categories), hits_back=g.hits_back, cameras=once(g.cameras),
              search=g.search, agreement=model.agreement, valid_from=model.valid_from,
              valid_until=model.valid_until)  # fmt: skip
        for g in model.grants
    )
    return Agreement(model.agreement, model.title, tuple(model.parties), model.valid_from,
                     model.valid_until, grants, file)  # fmt: skip


def _agency_changes(old: Mapping[str, AgencyInfo], new: Mapping[str, AgencyInfo]) -> list[str]:
    lines = []
    for k in sorted(old.keys() | new.keys()):
        if k not in old:
            lines.append(f"agency {k} added: {new[k].name} ({new[k].country})")
        elif k not in new:
            lines.append(f"agency {k} removed")
        elif old[k] != new[k]:
            lines.append(f"agency {k}: {old[k].name} ({old[k].country}) -> "
                         f"{new[k].name} ({new[k].country})")  # fmt: skip
    return lines


def _agreement_changes(old: Agreement, new: Agreement) -> list[str]:
    ref = new.reference
    lines = []
    for name in ("file", "title", "parties", "valid_from", "valid_until"):
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            lines.append(f"agreement {ref} {name}: {_show(a)} -> {_show(b)}")
    before = {(g.giver, g.receiver): g for g in old.grants}
    after = {(g.giver, g.receiver): g for g in new.grants}
    for d, g in after.items():
        head = f"agreement {ref} grant {d[0]} -> {d[1]}"
        if d not in before:
            lines.append(f"{head} added: {g.summary()}")
        elif (diff := _grant_diff(before[d], g)):
            lines.append(f"{head}: {diff}")
    lines += [f"agreement {ref} grant {d[0]} -> {d[1]} removed" for d in before if d not in after]
    return lines


def _grant_diff(old: Grant, new: Grant) -> str:
    parts = []
    for name in ("lists", "categories", "cameras"):
        a, b = getattr(old, name), getattr(new, name)
        changes = [f"+{x}" for x in b if x not in a] + [f"-{x}" for x in a if x not in b]
        if changes:
            parts.append(f"{name} {' '.join(changes)}")
    for name in ("hits_back", "search"):
        if getattr(old, name) != getattr(new, name):
            parts.append(f"{name} {_show(getattr(old, name))} -> {_show(getattr(new, name))}")
    return "; ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return iso(value, "seconds")
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ", ".join(value)
    return str(value)


# ---- hot reload ----

_RACY_NS = 2_000_000_000  # a file this close to its last look may change without a new mtime


class AgreementsWatcher:
    """The agreements of a directory, reloaded when its files change, without a restart.

    `check()` (call it from one thread, every few seconds) looks at the files' names, sizes
    and mtimes (and, while a file is too new for its mtime to be trusted, at its bytes); on
    a change it reloads.  A valid change calls `on_change(new, lines)` with
    `new.describe_changes(old)`; an invalid directory keeps the agreements in use and calls
    `on_error(message)`, once for each distinct message.  An agreement coming into force or
    expiring by `clock` is a change too (`on_change(same, ['agreement X expired ...'])`).
    A directory invalid at the start gives empty agreements (nothing shared) and on_error.
    """

    def __init__(
        self,
        directory: str | Path,
        on_change: Callable[[Agreements, list[str]], None],
        on_error: Callable[[str], None],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
    ):
        self.directory = Path(directory)
        self._on_change = on_change
        self._on_error = on_error
        self._clock = clock
        self._current = Agreements.empty()
        self._seen: tuple[object, ...] | None = None  # stats of what was last read
        self._digest: str | None = None  # and its bytes' hash
        self._racy = False
        self._error: str | None = None  # the last error told
        self._verdict: str | None = None  # the error of the files as `_digest` hashed them
        self._last = clock()
        self._reload()

    def current(self) -> Agreements:
        return self._current

    def next_change(self) -> dt.datetime | None:
        """When an agreement next comes into force or expires: check() then at the latest."""
        return self._current.next_change(self._last)

    def check(self) -> bool:
        """Reload if the files changed, and say what came into force or expired since the
        last check; True when on_change was called."""
        lines = self._reload()
        now = self._clock()
        if now > self._last:
            lines += self._current.describe_transitions(self._last, now)
        self._last = now
        if lines:
            self._on_change(self._current, lines)
        return bool(lines)

    def _reload(self) -> list[str]:
        """Lines of what changed, [] when nothing did (or the new files are wrong)."""
        digest = None
        try:
            seen = _stats(self.directory)
            if seen == self._seen and not self._racy:
                return []
            digest = _digest(self.directory, seen)
            self._racy = any(mtime >= time.time_ns() - _RACY_NS for _, _, mtime in seen)
            self._seen = seen
            if digest == self._digest:  # touched, or back as it was: the same verdict
                self._error = self._verdict
                return []
            self._digest, self._verdict = digest, None
            new = Agreements.load(self.directory)
        except (ConfigError, OSError) as e:
            message = str(e)
            if digest is not None and digest == self._digest:  # these files are wrong
                self._verdict = message
            if message != self._error:
                self._error = message
                self._on_error(message)
            return []
        self._error = None
        old, self._current = self._current, new
        return new.describe_changes(old)


def _stats(directory: Path) -> tuple[tuple[str, int, int], ...]:
    if not directory.is_dir():
        raise ConfigError(directory, None, "not a directory of agreements")
    stats = []
    for p in sorted(directory.glob("*.yaml")):
        if not p.name.startswith("."):
            s = p.stat()
            stats.append((p.name, s.st_size, s.st_mtime_ns))
    return tuple(stats)


def _digest(directory: Path, stats: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in stats:
        h.update(name.encode() + b"\0" + (directory / name).read_bytes() + b"\0")
    return h.hexdigest()
