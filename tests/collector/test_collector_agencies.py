"""Agencies in the collector's records: the config's `agencies:`, the hits' agency and list
agency, nodes and cameras, the master lists' owner, console users and audit rows; the
databases of an older collector get the columns at open; a node no agency owns is refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import sqlite3

import pytest
from helpers.link import collector_config, make_hit, stored_ids, wait_for

from edge.collector.agencies import AgencyConfig, list_owner
from edge.collector.cli import main
from edge.collector.config import CollectorConfig, ConfigError, load_config
from edge.collector.console.accounts import AccountError, ConsoleDB
from edge.collector.console.data import ConsoleData
from edge.collector.hits import HIT_COLUMNS, HitReader, HitScope
from edge.collector.service import CollectorService
from edge.collector.store import HitStore, Seen
from edge.collector.watchlist.master import ListOwnerError, WatchlistReader, WatchlistStore
from edge.core.watchlist.entry import Entry
from edge.node.outbox import Outbox
from edge.node.sender import HitSender

AGENCIES = [AgencyConfig(name="lt-vsat", nodes=["lt-*", "a2-*"]),
            AgencyConfig(name="pl-sg", nodes=["pl-*"])]  # fmt: skip


def _on(hit, watchlist: str):
    return dataclasses.replace(hit, match=dataclasses.replace(hit.match, watchlist=watchlist))


def _entry(name: str, plate: str = "AB123") -> Entry:
    return Entry(0, plate, name, "PL-SG", "alert", 1, "", None, None, None, "test")


# ---------------------------------------------------------------- config


def test_agencies_default_to_one_local_agency_owning_every_node():
    config = CollectorConfig()
    assert config.default_agency == "local" and config.agency_names == ["local"]
    assert config.agency_of_node("anything") == "local"


def test_the_first_agency_whose_globs_match_owns_a_node(tmp_path):
    path = tmp_path / "collector.yaml"
    path.write_text("agencies:\n  - {name: lt-vsat, nodes: ['lt-*', 'a2-*']}\n"
                    "  - {name: pl-sg, nodes: ['pl-*', 'a2-x']}\n")  # fmt: skip
    config = load_config(path)
    assert config.default_agency == "lt-vsat"
    assert [config.agency_of_node(n) for n in ("lt-1", "a2-x", "pl-1", "lv-1")] == [
        "lt-vsat", "lt-vsat", "pl-sg", None]


@pytest.mark.parametrize(("yaml", "says"), [
    ("agencies: [{name: LT-VSAT}]", "agencies.0.name"),
    ("agencies: [{name: lt-vsat, node: ['*']}]", "agencies.0.node"),
    ("agencies: [{name: lt-vsat}, {name: lt-vsat}]", "named twice"),
    ("agencies: []", "at least one agency"),
])  # fmt: skip
def test_a_bad_agency_is_an_error_naming_it(tmp_path, yaml, says):
    path = tmp_path / "collector.yaml"
    path.write_text(yaml + "\n")
    with pytest.raises(ConfigError, match=says):
        load_config(path)


def test_a_list_named_after_an_agency_is_that_agency_s():
    assert list_owner("pl-sg.stolen-pl", "lt-vsat") == "pl-sg"
    assert list_owner("stolen", "lt-vsat") == "lt-vsat"
    assert list_owner("pl-sg.stolen-pl", "lt-vsat", known=["lt-vsat"]) == "lt-vsat"
    assert list_owner("local.x", "lt-vsat") == "lt-vsat"
    assert list_owner("e2e.list", "lt-vsat") == "lt-vsat"  # no agency's shape


# ---------------------------------------------------------------- hits, nodes, cameras


def test_hits_are_stored_with_the_agencies_of_their_camera_and_list(tmp_path):
    config = CollectorConfig(agencies=AGENCIES)
    store = HitStore(tmp_path / "hits.db", agency_of_node=config.agency_of_node)
    try:
        assert [r[1] for r in store.db.execute("PRAGMA table_info(hits)")] == list(HIT_COLUMNS)
        own = make_hit(1, node="lt-1")
        partner_list = _on(make_hit(2, node="lt-1"), "pl-sg.stolen-pl")
        theirs = make_hit(3, node="pl-1")
        forwarded = make_hit(4, node="pl-remote")
        store.commit([own, partner_list, theirs])
        store.commit([forwarded], agency="lv-vp")  # a partner's: it says whose
        rows = dict((r[0], (r[1], r[2])) for r in store.db.execute(
            "SELECT hit_id, agency, list_agency FROM hits"))  # fmt: skip
        assert rows == {own.hit_id: ("lt-vsat", "lt-vsat"),
                        partner_list.hit_id: ("lt-vsat", "pl-sg"),
                        theirs.hit_id: ("pl-sg", "pl-sg"),
                        forwarded.hit_id: ("lv-vp", "lv-vp")}  # fmt: skip
        now = dt.datetime.now(dt.UTC)
        store.record_seen([Seen("lt-1", now, cameras={"cam1"}), Seen("pl-1", now, cameras={"c"})])
        assert {n["node"]: n["agency"] for n in store.nodes()} == {"lt-1": "lt-vsat",
                                                                  "pl-1": "pl-sg"}
        assert {(c[0], c[1]) for c in store.db.execute("SELECT node, agency FROM cameras")} == {
            ("lt-1", "lt-vsat"), ("pl-1", "pl-sg")}
    finally:
        store.close()
    reader = HitReader(tmp_path / "hits.db")
    try:
        got = reader.get(partner_list.hit_id)
        assert got is not None and (got.agency, got.list_agency) == ("lt-vsat", "pl-sg")
        pl = HitScope("pl-sg")
        assert {h.hit_id for h in reader.recent(now - dt.timedelta(days=9999), scope=pl)} == {
            partner_list.hit_id, theirs.hit_id}
        assert reader.get(own.hit_id, pl) is None
        granted = HitScope("pl-sg", cameras=(("lt-vsat", "lt-1", "cam1"),))
        assert reader.get(own.hit_id, granted) is not None
        assert {h.hit_id for h in reader.after(0, scope=granted)} == {
            own.hit_id, partner_list.hit_id, theirs.hit_id}
    finally:
        reader.close()


def _old_hits_db(path):
    """A hits database as a collector before agencies made it."""
    store = HitStore(path)
    store.commit([make_hit(1)])
    store.close()
    db = sqlite3.connect(path)
    for index in ("hits_by_agency", "hits_by_list_agency", "hits_by_agency_received"):
        db.execute(f"DROP INDEX {index}")
    for table, column in (("hits", "agency"), ("hits", "list_agency"), ("nodes", "agency"),
                          ("cameras", "agency")):  # fmt: skip
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.commit()
    db.close()


def test_an_old_hits_database_gets_the_agency_columns_at_open(tmp_path):
    path = tmp_path / "hits.db"
    _old_hits_db(path)
    store = HitStore(path, agency_of_node=lambda node: "lt-vsat")
    try:
        assert [r[1] for r in store.db.execute("PRAGMA table_info(hits)")] == list(HIT_COLUMNS)
        assert "agency" in {r[1] for r in store.db.execute("PRAGMA table_info(cameras)")}
        assert store.db.execute("SELECT agency, list_agency FROM hits").fetchall() == [("", "")]
        store.commit([make_hit(2)])
    finally:
        store.close()
    # the old hit is the default agency's, as shown by the console
    master = WatchlistStore(tmp_path / "watchlists.db")
    master.close()
    data = ConsoleData(path, tmp_path / "watchlists.db", default_agency="lt-vsat")
    try:
        old = data.hit(make_hit(1).hit_id, HitScope("lt-vsat", default=True))
        assert old is not None and (old["camera_agency"], old["list_agency"]) == (
            "lt-vsat", "lt-vsat")
        assert data.hit(make_hit(1).hit_id, HitScope("pl-sg")) is None
    finally:
        data.close()


def test_a_node_no_agency_owns_is_refused_and_its_hits_wait_on_the_edge(tmp_path, keys, ctx,
                                                                        caplog):  # fmt: skip
    config = collector_config(tmp_path, keys).model_copy(update={"agencies": [
        AgencyConfig(name="lt-vsat", nodes=["lt-*"])]})  # fmt: skip
    service = CollectorService(config, ctx=ctx)
    service.start()
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    public, secret = keys.edge("edge1")  # edge1: no agency's glob matches it
    sender = HitSender(outbox, service.endpoint, node_id="edge1", public_key=public,
                       secret_key=secret, server_key=keys.server_public, ctx=ctx,
                       ack_timeout_s=1.0, reconnect_max_s=0.2, max_backoff_s=0.5)  # fmt: skip
    try:
        sender.start()
        outbox.add_hit(make_hit(1))
        wait_for(lambda: service.stats().get("refused_agency", 0) >= 1, 10, "the hit refused")
        assert stored_ids(config.db_path) == []
        assert outbox.backlog() == 1  # not answered: it waits, and comes again
        assert any("no agency of this collector owns node 'edge1'" in r.getMessage()
                   for r in caplog.records)
    finally:
        sender.stop()
        outbox.close()
        service.stop()


# ---------------------------------------------------------------- the master lists


def test_lists_are_owned_by_an_agency(tmp_path):
    store = WatchlistStore(tmp_path / "w.db", default_agency="lt-vsat")
    try:
        store.import_entries("stolen", [_entry("stolen")])
        store.import_entries("wanted", [_entry("wanted")], agency="pl-sg")
        store.import_entries("pl-sg.stolen-pl", [_entry("pl-sg.stolen-pl")], agency="pl-sg")
        lists = store.lists()
        assert {n: i.agency for n, i in lists.items()} == {
            "stolen": "lt-vsat", "wanted": "pl-sg", "pl-sg.stolen-pl": "pl-sg"}
        with pytest.raises(ListOwnerError, match="pl-sg's, not lt-vsat's"):
            store.import_entries("wanted", [_entry("wanted", "ZZ9")], agency="lt-vsat")
        with pytest.raises(ListOwnerError, match="pl-sg's list"):  # an own list named so
            store.add(_entry("pl-sg.mine"), create=True)
        # no agency given: the list's own
        assert store.add(_entry("wanted", "ZZ8")).list == "wanted"
        assert store.lists()["wanted"].agency == "pl-sg"
    finally:
        store.close()
    reader = WatchlistReader(tmp_path / "w.db", default_agency="lt-vsat")
    try:
        assert {i.policy.name: i.agency for i in reader.lists()}["wanted"] == "pl-sg"
    finally:
        reader.close()


def test_an_old_watchlist_store_s_lists_are_the_default_agency_s(tmp_path):
    path = tmp_path / "w.db"
    store = WatchlistStore(path)
    store.import_entries("stolen", [_entry("stolen")])
    store.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE lists DROP COLUMN agency")
    db.commit()
    db.close()
    reader = WatchlistReader(path, default_agency="lt-vsat")  # before the writer migrates
    try:
        assert [i.agency for i in reader.lists()] == ["lt-vsat"]
    finally:
        reader.close()
    store = WatchlistStore(path, default_agency="lt-vsat")
    try:
        assert store.lists()["stolen"].agency == "lt-vsat"
        store.import_entries("stolen", [_entry("stolen", "NEW1")], agency="lt-vsat")
    finally:
        store.close()


def test_watchlist_import_owner(tmp_path, capsys):
    config = tmp_path / "collector.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nagencies:\n"
                      "  - {name: lt-vsat, nodes: ['lt-*']}\n  - {name: pl-sg, nodes: ['pl-*']}\n")
    csv = tmp_path / "list.csv"
    csv.write_text("plate,category,priority,agency\nAB123,alert,1,PL-SG\n")
    run = ["watchlist", "import", str(csv), "--config", str(config)]
    assert main([*run, "--list", "stolen"]) == 0
    assert main([*run, "--list", "wanted", "--owner", "pl-sg"]) == 0
    assert main([*run, "--list", "wanted", "--owner", "lt-vsat"]) == 2
    assert "wanted is pl-sg's, not lt-vsat's" in capsys.readouterr().err
    assert main([*run, "--list", "x", "--owner", "lv-vp"]) == 2
    assert "serves lt-vsat, pl-sg" in capsys.readouterr().err
    assert main([*run, "--list", "pl-sg.mine"]) == 2
    assert "pl-sg's list" in capsys.readouterr().err
    store = WatchlistStore(tmp_path / "data" / "watchlists.db")
    try:
        assert {n: i.agency for n, i in store.lists().items()} == {"stolen": "lt-vsat",
                                                                   "wanted": "pl-sg"}
    finally:
        store.close()


# ---------------------------------------------------------------- console users, audit


def test_users_and_audit_rows_name_their_agency(tmp_path):
    db = ConsoleDB(tmp_path / "console.db", default_agency="lt-vsat")
    try:
        assert db.add_user("olga", "operator password 1", "operator").agency == "lt-vsat"
        pawel = db.add_user("pawel", "operator password 1", "operator", agency="pl-sg")
        with pytest.raises(AccountError, match="agency id"):
            db.add_user("bad", "operator password 1", "operator", agency="PL")
        assert {u.name: u.agency for u in db.users()} == {"olga": "lt-vsat", "pawel": "pl-sg"}
        token = db.new_session(pawel)
        user = db.session_user(token, 3600, 3600)
        assert user is not None and user.agency == "pl-sg"
        db.acknowledge("hit-1", user, "mine")
        db.audit("olga", "export", "csv", agency="lt-vsat")
        db.audit("nobody", "sign-in failed")
        assert [(r["user"], r["agency"]) for r in db.audit_trail(agency="pl-sg")] == [
            ("pawel", "pl-sg")]
        assert [(r["user"], r["agency"]) for r in db.audit_trail(agency="lt-vsat")] == [
            ("nobody", ""), ("olga", "lt-vsat")]  # the default agency's: of none too
    finally:
        db.close()


def test_an_old_console_database_gets_the_agency_columns(tmp_path):
    path = tmp_path / "console.db"
    db = ConsoleDB(path)
    db.add_user("olga", "operator password 1", "operator")
    db.audit("olga", "sign-in")
    db.close()
    raw = sqlite3.connect(path)
    raw.execute("DROP INDEX audit_by_agency")
    raw.execute("DROP TRIGGER audit_no_update")  # a column is dropped by rewriting the table
    raw.execute("ALTER TABLE users DROP COLUMN agency")
    raw.execute("ALTER TABLE audit DROP COLUMN agency")
    raw.commit()
    raw.close()
    db = ConsoleDB(path, default_agency="lt-vsat")
    try:
        olga = db.user("olga")
        assert olga is not None and olga.agency == "lt-vsat"
        assert [r["agency"] for r in db.audit_trail(agency="lt-vsat")] == [""]
        assert db.audit_trail(agency="pl-sg") == []
    finally:
        db.close()


def test_user_add_agency(tmp_path, monkeypatch, capsys):
    config = tmp_path / "collector.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nagencies:\n"
                      "  - {name: lt-vsat, nodes: ['lt-*']}\n  - {name: pl-sg, nodes: ['pl-*']}\n")
    add = ["user", "add", "--role", "operator", "--password-stdin", "--config", str(config)]
    monkeypatch.setattr("sys.stdin", io.StringIO("operator password 1\n"))
    assert main([*add, "olga"]) == 0
    assert "for lt-vsat" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("operator password 1\n"))
    assert main([*add, "pawel", "--agency", "pl-sg"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("operator password 1\n"))
    assert main([*add, "ivan", "--agency", "lv-vp"]) == 2
    assert "serves lt-vsat, pl-sg" in capsys.readouterr().err
    db = ConsoleDB(tmp_path / "data" / "console.db")
    try:
        assert {u.name: u.agency for u in db.users()} == {"olga": "lt-vsat", "pawel": "pl-sg"}
        rows = db.audit_trail()
        assert [(r["action"], r["agency"]) for r in rows] == [("user add", "pl-sg"),
                                                              ("user add", "lt-vsat")]
    finally:
        db.close()

