"""Agreements as data: the files checked on load, the questions by time, the hot reload."""

from __future__ import annotations

import datetime as dt
import os
import textwrap
from pathlib import Path

import pytest

from edge.collector.agreements import Agreements, AgreementsWatcher
from edge.collector.cli import main
from edge.collector.config import load_config
from edge.core.agency import check_agency
from edge.core.config_files import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "agreements"
UTC = dt.UTC

AGENCIES = """\
lt-vsat: {name: "Valstybės sienos apsaugos tarnyba", country: LT}
pl-sg: {name: "Straż Graniczna, Podlaski Oddział", country: PL}
lv-vp: {name: "Valsts policija", country: LV}
"""

LT_PL = """\
agreement: LT-PL-2026-017
title: Border Guard cooperation, Podlaskie
parties: [lt-vsat, pl-sg]
valid_from: 2026-01-01T00:00:00Z
valid_until: 2027-12-31T23:59:59Z
grants:
  - from: pl-sg
    to: lt-vsat
    lists: [stolen-pl]
    categories: [wanted_person]
    hits_back: true
    cameras: ["pl-*", "xx-01/cam2"]
    search: true
"""


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def write(directory: Path, files: dict[str, str | None]) -> Path:
    """Write (or, for None, remove) files; each write moves its mtime on, as an edit would."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = directory / name
        if text is None:
            path.unlink()
            continue
        old = path.stat().st_mtime_ns if path.exists() else 0
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        mtime = max(path.stat().st_mtime_ns, old + 1_000_000)
        os.utime(path, ns=(mtime, mtime))
    return directory


def agreements_dir(tmp_path: Path, **files: str) -> Path:
    return write(tmp_path / "agreements", {"agencies.yaml": AGENCIES, **files})


def load_error(tmp_path: Path, **files: str) -> str:
    with pytest.raises(ConfigError) as e:
        Agreements.load(agreements_dir(tmp_path, **files))
    return str(e.value)


# ---- checks on load ----


def test_agency_ids():
    assert check_agency("lt-vsat") == "lt-vsat"
    assert check_agency("local") == "local"  # a collector that names no agency
    for bad in ("LT-vsat", "ltvsat", "l-vsat", "lt-", "lt-v.sat", "", None, "pl-" + "x" * 31):
        with pytest.raises(ValueError, match="not an agency id"):
            check_agency(bad)


BAD_FILES = [
    # (what is wrong, the agreement file's text, what the message must say)
    ("unknown key", LT_PL + "signed_by: someone\n", "a.yaml: signed_by: Extra inputs"),
    ("unknown key in a grant", LT_PL.replace("hits_back", "hit_back"),
     "a.yaml: grants.0.hit_back: Extra inputs"),
    ("unknown agency", LT_PL.replace("parties: [lt-vsat, pl-sg]", "parties: [lt-vsat, pl-wm]"),
     "a.yaml: parties.1: unknown agency 'pl-wm' (agencies.yaml names: lt-vsat, lv-vp, pl-sg)"),
    ("not an agency id", LT_PL.replace("to: lt-vsat", "to: LT"), "grants.0.to: Value error, 'LT'"),
    ("giver not a party", LT_PL.replace("from: pl-sg", "from: lv-vp"),
     "a.yaml: grants.0.from: 'lv-vp' is not a party (parties: lt-vsat, pl-sg)"),
    ("receiver not a party", LT_PL.replace("to: lt-vsat", "to: lv-vp"),
     "grants.0.to: 'lv-vp' is not a party"),
    ("grant to itself", LT_PL.replace("to: lt-vsat", "to: pl-sg"),
     "a.yaml: grants.0.to: 'pl-sg' cannot grant to itself"),
    ("until before from", LT_PL.replace("2027-12-31T23:59:59Z", "2025-12-31T00:00:00Z"),
     "a.yaml: valid_until: 2025-12-31T00:00:00Z is not after valid_from 2026-01-01T00:00:00Z"),
    ("until equal to from", LT_PL.replace("2027-12-31T23:59:59Z", "2026-01-01T02:00:00+02:00"),
     "valid_until: 2026-01-01T00:00:00Z is not after"),
    ("a time without a zone", LT_PL.replace("2026-01-01T00:00:00Z", "2026-01-01T00:00:00"),
     "a.yaml: valid_from: Value error, 2026-01-01T00:00:00 has no zone"),
    ("not a time", LT_PL.replace("2026-01-01T00:00:00Z", "next monday"),
     "valid_from: Value error, 'next monday' is not a time"),
    ("a number for a time", LT_PL.replace("2026-01-01T00:00:00Z", "1767225600"),
     "valid_from: Value error, must be a time"),
    ("bad list name", LT_PL.replace("[stolen-pl]", "[Stolen PL]"),
     "a.yaml: grants.0.lists.0: Value error, 'Stolen PL' is not a list name"),
    ("a partner's list", LT_PL.replace("[stolen-pl]", "[lt-vsat.stolen-lt]"),
     "grants.0.lists.0: 'lt-vsat.stolen-lt' is a partner's list"),
    ("bad category", LT_PL.replace("[wanted_person]", "[stolen_car]"),
     "a.yaml: grants.0.categories.0: Value error, 'stolen_car' is not a category"),
    ("camera glob with two slashes", LT_PL.replace('"xx-01/cam2"', '"a/b/c"'),
     "a.yaml: grants.0.cameras.1: Value error, 'a/b/c' is not a camera glob"),
    ("camera glob with a space", LT_PL.replace('"pl-*"', '"pl *"'), "grants.0.cameras.0"),
    ("empty camera glob part", LT_PL.replace('"pl-*"', '"pl-01/"'), "grants.0.cameras.0"),
    ("hits_back not a boolean", LT_PL.replace("hits_back: true", "hits_back: sometimes"),
     "grants.0.hits_back: Input should be a valid boolean"),
    ("one party", LT_PL.replace("[lt-vsat, pl-sg]", "[lt-vsat]"), "parties: List should have"),
    ("a party twice", LT_PL.replace("[lt-vsat, pl-sg]", "[lt-vsat, pl-sg, lt-vsat]"),
     "parties.2: 'lt-vsat' is named twice"),
    ("no reference", LT_PL.replace("agreement: LT-PL-2026-017\n", ""), "agreement: Field required"),
    ("bad reference", LT_PL.replace("LT-PL-2026-017", "LT PL 17"),
     "agreement: Value error, 'LT PL 17' is not an agreement reference"),
    ("a grant of nothing", LT_PL.split("    lists:")[0],
     "grants.0: grants nothing: name lists, categories or cameras"),
    ("two grants one way", LT_PL + LT_PL.split("grants:\n")[1],
     "grants.1: a second grant pl-sg -> lt-vsat"),
    ("search without cameras", LT_PL.replace('    cameras: ["pl-*", "xx-01/cam2"]\n', ""),
     "grants.0.search: needs cameras"),
    ("not YAML", "agreement: [", "a.yaml: not valid YAML"),
    ("not a mapping", "- one\n- two\n", "a.yaml: the top level must be a mapping"),
]


@pytest.mark.parametrize("text, expected", [b[1:] for b in BAD_FILES],
                         ids=[b[0] for b in BAD_FILES])  # fmt: skip
def test_a_bad_agreement_file_is_refused_naming_file_key_and_value(tmp_path, text, expected):
    assert expected in load_error(tmp_path, **{"a.yaml": text})


def test_every_problem_of_a_file_is_named(tmp_path):
    text = LT_PL.replace("from: pl-sg", "from: lv-vp").replace("to: lt-vsat", "to: lv-vp")
    message = load_error(tmp_path, **{"a.yaml": text})
    assert "grants.0.from: 'lv-vp' is not a party" in message
    assert "grants.0.to: 'lv-vp' is not a party" in message
    assert "grants.0.to: 'lv-vp' cannot grant to itself" in message


def test_a_reference_in_two_files_is_refused_naming_both(tmp_path):
    message = load_error(tmp_path, **{"a.yaml": LT_PL, "b.yaml": LT_PL})
    assert "b.yaml: agreement: 'LT-PL-2026-017' is also the reference in a.yaml" in message


@pytest.mark.parametrize("agencies, expected", [
    ("lt-vsat: {name: x, country: LT, phone: 112}\n", "agencies.yaml: lt-vsat.phone: Extra"),
    ("lt-vsat: {name: x, country: lt}\n", "agencies.yaml: lt-vsat.country: String should match"),
    ("lt-vsat: {name: x}\n", "agencies.yaml: lt-vsat.country: Field required"),
    ("LT: {name: x, country: LT}\n", "agencies.yaml: LT.[key]: Value error, 'LT' is not an"),
    ("local: {name: x, country: LT}\n", "'local' is no agency of an agreement"),
])  # fmt: skip
def test_a_bad_agencies_file_is_refused_naming_the_key(tmp_path, agencies, expected):
    directory = write(tmp_path / "d", {"agencies.yaml": agencies})
    with pytest.raises(ConfigError) as e:
        Agreements.load(directory)
    assert expected in str(e.value)


def test_a_missing_directory_or_agencies_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not a directory of agreements"):
        Agreements.load(tmp_path / "nowhere")
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match=r"agencies.yaml: cannot read"):
        Agreements.load(tmp_path / "d")


def test_only_agreement_files_are_read(tmp_path):
    d = agreements_dir(tmp_path, **{"a.yaml": LT_PL, ".a.yaml": "broken: [", "notes.txt": "x"})
    loaded = Agreements.load(d)
    assert [a.reference for a in loaded.agreements] == ["LT-PL-2026-017"]
    assert loaded.agreements[0].file == "a.yaml"


def test_a_bare_date_is_a_whole_utc_day_and_offsets_become_utc(tmp_path):
    text = LT_PL.replace("2026-01-01T00:00:00Z", "2026-01-01").replace(
        "2027-12-31T23:59:59Z", '"2027-12-31"'
    )  # a quoted date is read the same
    a = Agreements.load(agreements_dir(tmp_path, **{"a.yaml": text})).agreements[0]
    assert a.valid_from == dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert a.valid_until == dt.datetime(2028, 1, 1, tzinfo=UTC)  # the 31st included
    text = LT_PL.replace("2026-01-01T00:00:00Z", "2026-01-01T02:00:00+02:00")
    a = Agreements.load(agreements_dir(tmp_path, **{"a.yaml": text})).agreements[0]
    assert a.valid_from == dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert a.valid_from.tzinfo == UTC


def test_the_examples_load(tmp_path):
    loaded = Agreements.load(EXAMPLES)
    assert set(loaded.agencies) == {"lt-vsat", "pl-sg", "lv-vp"}
    assert loaded.agencies["pl-sg"].country == "PL"
    assert {a.reference for a in loaded.agreements} == {"LT-PL-2026-017", "LV-LT-2025-004"}
    now = at("2026-06-01T00:00")
    assert loaded.list_granted("pl-sg", "stolen-pl", "lt-vsat", at=now)
    assert loaded.list_granted("lv-vp", "any-list", "lt-vsat", "wanted_person", at=now)
    assert not loaded.list_granted("lv-vp", "any-list", "pl-sg", "wanted_person", at=now)
    assert loaded.partners("lt-vsat", now) == {"pl-sg", "lv-vp"}
    assert loaded.partners("pl-sg", now) == {"lt-vsat"}


# ---- questions by time ----


@pytest.fixture
def loaded(tmp_path) -> Agreements:
    return Agreements.load(agreements_dir(tmp_path, **{"lt-vsat--pl-sg.yaml": LT_PL}))


IN_FORCE = at("2026-06-01T00:00")
BEFORE = at("2025-12-31T23:59:59")
AFTER = at("2027-12-31T23:59:59")


def test_grants_are_in_force_from_valid_from_until_valid_until(loaded):
    [g] = loaded.grants("pl-sg", "lt-vsat", IN_FORCE)
    assert (g.agreement, g.lists, g.categories, g.hits_back) == (
        "LT-PL-2026-017", ("stolen-pl",), ("wanted_person",), True)  # fmt: skip
    assert loaded.grants("pl-sg", "lt-vsat", at("2026-01-01T00:00")) == [g]  # from: included
    assert loaded.grants("pl-sg", "lt-vsat", BEFORE) == []  # not yet
    assert loaded.grants("pl-sg", "lt-vsat", AFTER) == []  # until: excluded (expired)
    assert loaded.grants("lt-vsat", "pl-sg", IN_FORCE) == []  # one way only
    assert [a.reference for a in loaded.in_force(IN_FORCE)] == ["LT-PL-2026-017"]
    with pytest.raises(ValueError, match="timezone-aware"):
        loaded.grants("pl-sg", "lt-vsat", dt.datetime(2026, 6, 1))


def test_lists_by_name_or_by_category(loaded):
    assert loaded.list_granted("pl-sg", "stolen-pl", "lt-vsat", at=IN_FORCE)
    assert loaded.list_granted("pl-sg", "pl-sg.stolen-pl", "lt-vsat", at=IN_FORCE)  # qualified
    assert not loaded.list_granted("pl-sg", "stolen-pl", "lt-vsat", at=AFTER)
    assert not loaded.list_granted("pl-sg", "stolen-pl", "lv-vp", at=IN_FORCE)
    assert not loaded.list_granted("pl-sg", "cases", "lt-vsat", at=IN_FORCE)
    assert loaded.list_granted("pl-sg", "cases", "lt-vsat", "wanted_person", IN_FORCE)
    assert not loaded.list_granted("pl-sg", "cases", "lt-vsat", "stolen_plate", IN_FORCE)
    pairs = [("stolen-pl", None), ("cases", "wanted_person"), ("cases", "other"),
             ("stolen-pl", None)]  # fmt: skip
    assert loaded.shared_lists("pl-sg", "lt-vsat", pairs, IN_FORCE) == [
        ("stolen-pl", None), ("cases", "wanted_person")]  # fmt: skip
    assert loaded.shared_lists("pl-sg", "lt-vsat", pairs, BEFORE) == []


def test_hits_back(tmp_path, loaded):
    assert loaded.hits_back("pl-sg", "stolen-pl", "lt-vsat", IN_FORCE)
    assert loaded.hits_back("pl-sg", "cases", "lt-vsat", IN_FORCE, category="wanted_person")
    assert not loaded.hits_back("pl-sg", "cases", "lt-vsat", IN_FORCE)
    assert not loaded.hits_back("pl-sg", "stolen-pl", "lt-vsat", AFTER)
    text = LT_PL.replace("hits_back: true", "hits_back: false")
    quiet = Agreements.load(agreements_dir(tmp_path / "quiet", **{"a.yaml": text}))
    assert quiet.list_granted("pl-sg", "stolen-pl", "lt-vsat", at=IN_FORCE)
    assert not quiet.hits_back("pl-sg", "stolen-pl", "lt-vsat", IN_FORCE)


def test_cameras_by_node_or_node_and_camera_globs(loaded):
    assert loaded.sees_camera("lt-vsat", "pl-sg", "pl-budzisko-1", "cam1", IN_FORCE)
    assert loaded.sees_camera("lt-vsat", "pl-sg", "pl-budzisko-1", "", IN_FORCE)  # the node
    assert not loaded.sees_camera("lt-vsat", "pl-sg", "pl-budzisko-1", "cam1", AFTER)
    assert not loaded.sees_camera("lv-vp", "pl-sg", "pl-budzisko-1", "cam1", IN_FORCE)
    assert not loaded.sees_camera("lt-vsat", "pl-sg", "PL-budzisko-1", "cam1", IN_FORCE)
    assert loaded.sees_camera("lt-vsat", "pl-sg", "xx-01", "cam2", IN_FORCE)  # node/camera
    assert not loaded.sees_camera("lt-vsat", "pl-sg", "xx-01", "cam3", IN_FORCE)
    assert not loaded.sees_camera("lt-vsat", "pl-sg", "xx-01", "", IN_FORCE)  # not the node
    assert loaded.sees_camera("pl-sg", "pl-sg", "anything", "cam9", BEFORE)  # its own
    assert loaded.may_search("lt-vsat", "pl-sg", "pl-budzisko-1", IN_FORCE)
    assert loaded.may_search("lt-vsat", "pl-sg", "xx-01", IN_FORCE)
    assert not loaded.may_search("lt-vsat", "pl-sg", "yy-01", IN_FORCE)
    assert not loaded.may_search("lt-vsat", "pl-sg", "pl-budzisko-1", BEFORE)
    assert loaded.may_search("lt-vsat", "lt-vsat", "lt-1", BEFORE)


def test_partners_and_next_change(loaded):
    assert loaded.partners("lt-vsat", IN_FORCE) == {"pl-sg"}
    assert loaded.partners("pl-sg", IN_FORCE) == {"lt-vsat"}
    assert loaded.partners("pl-sg", AFTER) == set()
    assert loaded.partners("lv-vp", IN_FORCE) == set()
    assert loaded.next_change(BEFORE) == at("2026-01-01T00:00")
    assert loaded.next_change(at("2026-01-01T00:00")) == at("2027-12-31T23:59:59")
    assert loaded.next_change(AFTER) is None
    assert Agreements.empty().next_change(IN_FORCE) is None
    assert not Agreements.empty().list_granted("pl-sg", "stolen-pl", "lt-vsat")


# ---- what changed ----


def test_describe_changes(tmp_path, loaded):
    d = tmp_path / "agreements"
    assert loaded.describe_changes(loaded) == []
    first = loaded.describe_changes(Agreements.empty())
    assert "agency lv-vp added: Valsts policija (LV)" in first
    assert ("agreement LT-PL-2026-017 added (lt-vsat--pl-sg.yaml): Border Guard cooperation, "
            "Podlaskie; lt-vsat, pl-sg; from 2026-01-01T00:00:00Z until 2027-12-31T23:59:59Z"
            ) in first  # fmt: skip
    assert ("agreement LT-PL-2026-017 grant pl-sg -> lt-vsat: lists stolen-pl; categories "
            "wanted_person; hits back; cameras pl-*, xx-01/cam2; search") in first
    changed = (LT_PL.replace("[stolen-pl]", "[stolen-pl, cases]").replace("search: true", "")
               .replace("2027-12-31T23:59:59Z", "2026-12-31T00:00:00Z")
               + "  - {from: lt-vsat, to: pl-sg, lists: [stolen-lt]}\n")  # fmt: skip
    write(d, {"lt-vsat--pl-sg.yaml": changed,
              "agencies.yaml": AGENCIES.replace("Valsts policija", "Valsts policija (VP)")})
    new = Agreements.load(d)
    assert new.describe_changes(loaded) == [
        "agency lv-vp: Valsts policija (LV) -> Valsts policija (VP) (LV)",
        "agreement LT-PL-2026-017 valid_until: 2027-12-31T23:59:59Z -> 2026-12-31T00:00:00Z",
        "agreement LT-PL-2026-017 grant pl-sg -> lt-vsat: lists +cases; search yes -> no",
        "agreement LT-PL-2026-017 grant lt-vsat -> pl-sg added: lists stolen-lt",
    ]
    assert loaded.describe_changes(new)[-1] == (
        "agreement LT-PL-2026-017 grant lt-vsat -> pl-sg removed")
    write(d, {"lt-vsat--pl-sg.yaml": None})
    assert Agreements.load(d).describe_changes(new) == [
        "agreement LT-PL-2026-017 revoked (file removed)"]  # fmt: skip
    assert new.describe_transitions(BEFORE, at("2026-12-31T00:00")) == [
        "agreement LT-PL-2026-017 in force (from 2026-01-01T00:00:00Z)",
        "agreement LT-PL-2026-017 expired (until 2026-12-31T00:00:00Z)",
    ]  # fmt: skip


# ---- hot reload ----


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[Agreements, list[str]]] = []
        self.errors: list[str] = []

    def on_change(self, new: Agreements, lines: list[str]) -> None:
        self.changes.append((new, lines))

    def on_error(self, message: str) -> None:
        self.errors.append(message)


class FakeClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def watch(d: Path, now: dt.datetime = IN_FORCE) -> tuple[AgreementsWatcher, Recorder, FakeClock]:
    rec, clock = Recorder(), FakeClock(now)
    return AgreementsWatcher(d, rec.on_change, rec.on_error, clock=clock), rec, clock


def test_watcher_reloads_a_change_and_keeps_the_old_on_a_bad_file(tmp_path):
    d = agreements_dir(tmp_path, **{"lt-vsat--pl-sg.yaml": LT_PL})
    w, rec, _ = watch(d)
    assert w.current().list_granted("pl-sg", "stolen-pl", "lt-vsat")
    assert not w.check() and rec.changes == [] and rec.errors == []

    write(d, {"lt-vsat--pl-sg.yaml": LT_PL.replace("[stolen-pl]", "[stolen-pl, cases]")})
    assert w.check()
    [(new, lines)] = rec.changes
    assert new is w.current() and new.list_granted("pl-sg", "cases", "lt-vsat")
    assert lines == ["agreement LT-PL-2026-017 grant pl-sg -> lt-vsat: lists +cases"]

    write(d, {"lt-vsat--pl-sg.yaml": LT_PL.replace("lists:", "listz:")})
    assert not w.check() and not w.check()
    write(d, {"agencies.yaml": AGENCIES + "\n"})  # another edit, the same error
    assert not w.check()
    [error] = rec.errors  # once, not every poll
    assert "lt-vsat--pl-sg.yaml: grants.0.listz: Extra inputs are not permitted" in error
    assert w.current() is new  # the old agreements still hold
    assert len(rec.changes) == 1

    write(d, {"lt-vsat--pl-sg.yaml": LT_PL.replace("to: lt-vsat", "to: lv-vp")})
    assert not w.check()
    assert len(rec.errors) == 2 and "grants.0.to: 'lv-vp' is not a party" in rec.errors[1]

    write(d, {"lt-vsat--pl-sg.yaml": LT_PL})  # fixed
    assert w.check()
    assert rec.changes[-1][1] == ["agreement LT-PL-2026-017 grant pl-sg -> lt-vsat: lists -cases"]
    write(d, {"lt-vsat--pl-sg.yaml": LT_PL.replace("to: lt-vsat", "to: lv-vp")})
    assert not w.check()
    assert len(rec.errors) == 3  # the same error as before the fix is news again


def test_watcher_sees_a_rewrite_of_the_same_size_and_ignores_a_touch(tmp_path):
    d = agreements_dir(tmp_path, **{"a.yaml": LT_PL})
    w, rec, _ = watch(d)
    path = d / "a.yaml"
    stat = path.stat()
    path.write_text(LT_PL.replace("hits_back: true", "hits_back: fals"))  # same size...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and mtime
    assert not w.check()
    assert "hits_back: Input should be a valid boolean" in rec.errors[0]
    write(d, {"a.yaml": LT_PL})  # back to the agreements in use: nothing to say
    assert not w.check() and rec.changes == []
    write(d, {"a.yaml": LT_PL.replace("search: true", "search: false")})
    assert w.check()
    os.utime(path)  # touched, not changed
    assert not w.check() and len(rec.changes) == 1


def test_watcher_revokes_a_removed_file_and_adds_a_new_one(tmp_path):
    d = agreements_dir(tmp_path, **{"lt-vsat--pl-sg.yaml": LT_PL})
    w, rec, _ = watch(d)
    write(d, {"lt-vsat--pl-sg.yaml": None})
    assert w.check()
    assert rec.changes[-1][1] == ["agreement LT-PL-2026-017 revoked (file removed)"]
    assert not w.current().list_granted("pl-sg", "stolen-pl", "lt-vsat")
    write(d, {"b.yaml": LT_PL})
    assert w.check()
    assert rec.changes[-1][1][0].startswith("agreement LT-PL-2026-017 added (b.yaml)")


def test_watcher_notices_coming_into_force_and_expiry_by_its_clock(tmp_path):
    d = agreements_dir(tmp_path, **{"a.yaml": LT_PL})
    w, rec, clock = watch(d, now=BEFORE)
    assert not w.current().list_granted("pl-sg", "stolen-pl", "lt-vsat", at=clock())
    assert w.next_change() == at("2026-01-01T00:00")
    clock.now = at("2026-01-01T00:00")
    assert w.check()
    assert rec.changes[-1][1] == ["agreement LT-PL-2026-017 in force (from 2026-01-01T00:00:00Z)"]
    assert w.current().list_granted("pl-sg", "stolen-pl", "lt-vsat", at=clock())
    clock.now = at("2027-06-01T00:00")
    assert not w.check()
    clock.now = AFTER
    assert w.check()
    assert rec.changes[-1][1] == ["agreement LT-PL-2026-017 expired (until 2027-12-31T23:59:59Z)"]
    assert not w.current().list_granted("pl-sg", "stolen-pl", "lt-vsat", at=clock())
    assert w.next_change() is None and not w.check()


def test_watcher_of_a_bad_directory_starts_empty_and_says_why(tmp_path):
    d = agreements_dir(tmp_path, **{"a.yaml": LT_PL.replace("pl-sg]", "pl-xx]")})
    w, rec, _ = watch(d)
    assert w.current().agreements == ()
    [error] = rec.errors
    assert "a.yaml: parties.1: unknown agency 'pl-xx'" in error
    write(d, {"a.yaml": LT_PL})
    assert w.check() and w.current().list_granted("pl-sg", "stolen-pl", "lt-vsat")
    (d / "a.yaml").unlink()
    (d / "agencies.yaml").unlink()
    d.rmdir()
    assert not w.check()
    assert "not a directory of agreements" in rec.errors[-1]
    assert w.current().agreements != ()  # kept


# ---- config and command line ----


def test_agreements_dir_is_relative_to_the_config_file(tmp_path):
    path = tmp_path / "collector.yaml"
    path.write_text("agreements_dir: agreements\n")
    assert load_config(path).agreements_dir == tmp_path / "agreements"
    path.write_text("listen: tcp://127.0.0.1:0\n")
    assert load_config(path).agreements_dir is None


def test_cli_check(tmp_path, capsys):
    assert main(["agreements", "check", "--at", "2026-06-01T00:00:00Z", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert "LT-PL-2026-017 [IN FORCE]" in out
    assert "pl-sg -> lt-vsat: lists stolen-pl; categories stolen_vehicle; hits back" in out
    d = agreements_dir(tmp_path, **{"a.yaml": LT_PL})
    config = tmp_path / "collector.yaml"
    config.write_text("agreements_dir: agreements\n")
    assert main(["agreements", "check", "--config", str(config), "--at", "2028-01-01"]) == 0
    assert "LT-PL-2026-017 [EXPIRED]" in capsys.readouterr().out
    write(d, {"a.yaml": LT_PL + "oops: 1\n"})
    assert main(["agreements", "check", "--config", str(config)]) == 2
    assert "a.yaml: oops: Extra inputs are not permitted" in capsys.readouterr().err
    config.write_text("listen: tcp://127.0.0.1:0\n")
    assert main(["agreements", "check", "--config", str(config)]) == 2
    assert "agreements_dir: not set" in capsys.readouterr().err


def test_watcher_of_a_directory_gone_and_back_as_it_was(tmp_path):
    d = agreements_dir(tmp_path, **{"a.yaml": LT_PL})
    w, rec, _ = watch(d)
    kept = w.current()
    d.rename(tmp_path / "away")
    assert not w.check() and not w.check()
    assert len(rec.errors) == 1 and "not a directory of agreements" in rec.errors[0]
    (tmp_path / "away").rename(d)
    assert not w.check() and w.current() is kept and rec.changes == []
    d.rename(tmp_path / "away")
    assert not w.check()
    assert len(rec.errors) == 2  # told again: it had come back in between
    (tmp_path / "away").rename(d)
    write(d, {"a.yaml": LT_PL + "oops: 1\n"})
    assert not w.check()
    write(d, {"a.yaml": LT_PL + "oops: 1\n"})  # touched: the same verdict, not told again
    assert not w.check() and len(rec.errors) == 3
