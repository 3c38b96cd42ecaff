"""Cheap ways to hurt the console, and CSV a spreadsheet would run: extreme parameters, a
huge CSV cell, a latin-1 file, a 100,000-entry import, `;`-separated exports, all against a
real collector on loopback (and `anpr-collector watchlist export`)."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers.console import ADMIN, OPERATOR, Client, console_hit, running_stack
from helpers.link import wait_for

from edge.collector import csvsafe
from edge.collector.cli import main
from edge.collector.watchlist import files


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def admin(stack) -> Client:
    return stack.client(ADMIN)


BIG = str(10**30)
BAD_QUERIES = [
    "/api/hits?since=99999-01-01", "/api/hits?since=9999-12-31T23:59:59-05:00",
    "/api/hits?until=0001-01-01T00:00:00%2B05:00", "/api/hits?since=NaN",
    "/api/hits?since=" + "2026" * 100, "/api/hits?limit=NaN", f"/api/hits?limit={BIG}",
    "/api/hits?limit=-1", "/api/hits?limit=1e3",
    "/api/hits.csv?since=9999-12-31T23:59:59-05:00", f"/api/hits.csv?limit={BIG}",
    "/api/hits.csv?sep=%7C",
    f"/api/audit?before={BIG}", "/api/audit?before=-1", "/api/audit?before=NaN",
    f"/api/watchlists/stolen/entries?after={BIG}", "/api/watchlists/stolen/entries?after=-1",
    "/api/watchlists/stolen/entries?after=NaN",
]  # fmt: skip


@pytest.mark.parametrize("path", BAD_QUERIES)
def test_extreme_parameters_are_a_clear_400(admin, path):
    status, body = admin.get(path)
    assert status == 400, (path, body)
    assert isinstance(body, dict) and len(body["error"]) > 10, body


@pytest.mark.parametrize("entry_id", [BIG, str(2**63)])
def test_an_id_past_any_there_is_no_such_entry(admin, entry_id):
    status, body = admin.post(f"/api/entries/{entry_id}/expire", {})
    assert status == 404 and body == {"error": "no such entry"}


def _upload(data: bytes, filename: str = "list.csv", **extra: object) -> dict[str, object]:
    return {"data": base64.b64encode(data).decode(), "filename": filename, "agency": "PL",
            **extra}  # fmt: skip


HEADER = "plate,country,category,priority,reason\n"


def test_a_latin1_file_is_refused_by_name_or_read_as_told(admin):
    raw = (HEADER + "AB123CD,PL,alert,2,Müller Straße\n").encode("latin-1")
    status, body = admin.post("/api/watchlists/latin/import", _upload(raw))
    assert status == 400, body
    assert "nothing imported" in body["error"] and "not utf-8 text" in body["error"]
    assert "line 2" in body["error"] and "encoding" in body["error"]
    assert body["problems"][0]["line"] == 2
    status, body = admin.post("/api/watchlists/latin/import",
                              _upload(raw, encoding="windows-1252"))  # fmt: skip
    assert status == 200 and body["added"] == 1, body
    (entry,) = admin.get("/api/watchlists/latin/entries")[1]["entries"]
    assert entry["reason"] == "Müller Straße"
    # UTF-8 (with a spreadsheet's byte-order mark) needs no choice.
    status, body = admin.post("/api/watchlists/utf8/import",
                              _upload(("\ufeff" + HEADER + "AB1234,PL,alert,2,Łódź\n").encode()))
    assert status == 200, body
    assert admin.get("/api/watchlists/utf8/entries")[1]["entries"][0]["reason"] == "Łódź"
    # Text that a reader already mangled is not taken either.
    status, body = admin.post("/api/watchlists/latin/import",
                              {"text": HEADER + "AB1235,PL,alert,2,M\ufffdller\n"})
    assert status == 400 and "U+FFFD" in body["error"]
    status, body = admin.post("/api/watchlists/latin/import", _upload(raw, encoding="ebcdic"))
    assert status == 400 and "encoding must be one of" in body["error"]


def test_a_huge_csv_field_is_a_clear_error(admin):
    big = HEADER + "AB123CD,PL,alert,2," + "x" * 1_000_000 + "\n"
    status, body = admin.post("/api/watchlists/huge/import", _upload(big.encode()))
    assert status == 400, body
    assert "field longer than" in body["problems"][0]["message"]
    # 21 MB: past the import cap, refused on its Content-Length before the body is read
    # (a client that writes the whole body before it reads may see the connection cut
    # instead: the server stops reading once it has answered)
    huge = json.dumps({"text": HEADER + "AB123CD,PL,alert,2," + "x" * 21_000_000 + "\n"})
    host, port = admin.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /api/watchlists/huge/import HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"Cookie: anpr_console={admin.token}\r\nOrigin: {admin.url}\r\n"
                     "Content-Type: application/json\r\n"
                     f"Content-Length: {len(huge)}\r\n\r\n".encode() + huge[:65536].encode())
        reply = sock.makefile("rb").readline()
        assert reply.split()[1] == b"413", reply
    assert admin.get("/api/watchlists/huge/entries")[1]["entries"] == []


def test_a_huge_csv_field_in_a_file_is_a_clear_error_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "huge.csv"
    path.write_text(HEADER + "AB123CD,PL,alert,2," + "x" * 20_000_000 + "\n")
    assert main(["watchlist", "import", str(path), "--list", "x",
                 "--db", str(tmp_path / "w.db")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"{path}:2: a field longer than" in err and "Traceback" not in err


def test_a_big_import_leaves_the_console_answering(stack, admin, monkeypatch):
    rows = "".join(f"AB{i:06d},PL,stolen_vehicle,2,case {i}\n" for i in range(100_000))
    started, go = threading.Event(), threading.Event()
    real = files.parse_entries

    def parse_held(*args, **kw):  # reading the file waits until the test says so
        started.set()
        go.wait(30)
        return real(*args, **kw)

    monkeypatch.setattr("edge.collector.console.upload.parse_entries", parse_held)
    other = stack.client(OPERATOR)
    with ThreadPoolExecutor(1) as pool:
        body = {"text": HEADER + rows, "filename": "many.csv", "agency": "PL"}
        job = pool.submit(admin.post, "/api/watchlists/many/import", body)
        try:
            assert started.wait(30), "the import did not begin"
            status, body = other.get("/api/me")  # while the file is being read
            assert status == 200 and body["user"]["name"] == "olga"
            assert not job.done()
        finally:
            go.set()
        status, body = job.result(timeout=120)
    assert status == 200 and body["added"] == 100_000, body


# ---------------------------------------------------------------- CSV exports

NASTY = ["=HYPERLINK(\"http://evil.example\",\"x\")", "stolen;=cmd()", "+4822", "@SUM(1)",
         "-1+2", "grey van, =2+3", "\t=1"]  # fmt: skip
TRIGGERS = tuple("=+-@\t\r")


def _careless_cells(text: str) -> list[str]:
    """Cells as a spreadsheet splitting on , or ; and ignoring quotes would see them."""
    cells = [c.strip(' "') for line in text.splitlines() for c in re.split(r"[,;]", line)]
    return [c for c in cells if c[:1] in TRIGGERS and not _number(c)]


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def nasty_hits(stack):
    seen = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)
    hits = [console_hit(f"WX{i:05d}", reason=r, seen_at=seen + dt.timedelta(minutes=i),
                        watchlist="nasty", pictures=False) for i, r in enumerate(NASTY)]
    outbox = stack.edge("edge-a")
    for h in hits:
        outbox.add_hit(h)
    wait_for(lambda: all(stack.stored(h.hit_id) for h in hits), 20, "hits to be stored")
    return hits


@pytest.mark.parametrize("sep", [",", ";"])
def test_hit_exports_quote_every_cell_and_run_nothing(stack, nasty_hits, sep):
    c = stack.client(OPERATOR)
    q = "watchlist=nasty" + ("&sep=%3B" if sep == ";" else "")
    status, headers, raw = c.request("GET", f"/api/hits.csv?{q}")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    text = raw.decode()
    assert text.startswith(f'"hit_id"{sep}"priority"{sep}')
    rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=sep))
    assert all(not r["reason"].startswith(TRIGGERS) for r in rows)
    assert sorted(csvsafe.restore_cell(r["reason"]) for r in rows) == sorted(NASTY)
    assert _careless_cells(text) == []
    assert {r["lat"] for r in rows} == {"52.2297"}  # numbers stay numbers


@pytest.mark.parametrize("sep", [",", ";"])
def test_watchlist_export_is_defused_and_imports_back_unchanged(tmp_path, capsys, sep):
    db = str(tmp_path / "w.db")
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"plate": f"AB{i}", "category": "alert", "priority": 2,
                                          "agency": "PL", "reason": r}) + "\n"
                              for i, r in enumerate(NASTY)))  # fmt: skip
    assert main(["watchlist", "import", str(source), "--list", "nasty", "--db", db]) == 0
    capsys.readouterr()
    assert main(["watchlist", "export", "-", "--list", "nasty", "--db", db,
                 "--format", "jsonl"]) == 0  # fmt: skip
    stored = sorted(json.loads(line)["reason"] for line in capsys.readouterr().out.splitlines())
    assert len(stored) == len(NASTY) and "stolen;=cmd()" in stored
    out = tmp_path / "out.csv"
    assert main(["watchlist", "export", str(out), "--list", "nasty", "--db", db,
                 "--sep", sep]) == 0  # fmt: skip
    text = out.read_text()
    assert text.startswith(f'"id"{sep}"list"{sep}"plate"{sep}')
    assert _careless_cells(text) == []
    rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=sep))
    assert all(not r["reason"].startswith(TRIGGERS) for r in rows)
    # Imported at another collector, every reason is what it was.
    other = str(tmp_path / "other.db")
    assert main(["watchlist", "import", str(out), "--list", "nasty", "--db", other]) == 0
    capsys.readouterr()
    assert main(["watchlist", "export", "-", "--list", "nasty", "--db", other,
                 "--format", "jsonl"]) == 0  # fmt: skip
    back = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["reason"] for r in back) == stored
