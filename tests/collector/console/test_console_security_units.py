"""The console's defences one by one, on a fake clock: sign-in throttling, the hashing gate,
summed refusals, CSV cells a spreadsheet cannot run, the open-file reserve."""

from __future__ import annotations

import csv
import io
import random
import re
import subprocess
import sys
import threading

import pytest

from edge.collector import csvsafe
from edge.collector.console import throttle as th
from edge.collector.console.throttle import HashGate, RefusalLog, SignInThrottle


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _fail(t: SignInThrottle, name: str, address: str) -> th.Verdict:
    v = t.begin(name, address)
    if v.attempt is not None:
        t.failed(v.attempt)
    return v


def test_attempts_are_counted_when_admitted_not_when_checked():
    t = SignInThrottle(Clock())
    admitted = [t.begin("olga", "10.0.0.66") for _ in range(40)]
    assert sum(v.attempt is not None for v in admitted) == th.LIMITS["pair"]
    refused = [v for v in admitted if v.attempt is None]
    assert {v.reason for v in refused} == {"too many attempts at once"}
    # The right password in the same burst is not even looked at ...
    assert t.begin("olga", "10.0.0.66").attempt is None
    for v in admitted:
        if v.attempt is not None:
            t.failed(v.attempt)
    # ... and once they have failed, the pair is locked.
    v = t.begin("olga", "10.0.0.66")
    assert v.attempt is None and v.reason == "too many failures"
    assert v.wait_s == pytest.approx(th.LOCKOUT_S)


def test_a_pair_lock_leaves_the_name_free_elsewhere_and_grows_each_time():
    clock = Clock()
    t = SignInThrottle(clock)
    for _ in range(5):
        _fail(t, "olga", "10.0.0.66")
    assert t.begin("olga", "10.0.0.66").attempt is None
    ok = t.begin("OLGA", "10.0.0.7")  # the operator at her own desk
    assert ok.attempt is not None
    t.succeeded(ok.attempt)
    clock.t += th.LOCKOUT_S + 1
    for _ in range(5):
        assert _fail(t, "olga", "10.0.0.66").attempt is not None
    assert t.locked("olga", "10.0.0.66") == pytest.approx(2 * th.LOCKOUT_S)  # doubled
    clock.t += 2 * th.LOCKOUT_S + 1
    for _ in range(5):
        _fail(t, "olga", "10.0.0.66")
    assert t.locked("olga", "10.0.0.66") == pytest.approx(4 * th.LOCKOUT_S)
    # Quiet for long enough, and the earlier locks are forgotten.
    clock.t += th.STRIKES_FORGOTTEN_S + 1
    for _ in range(5):
        _fail(t, "olga", "10.0.0.66")
    assert t.locked("olga", "10.0.0.66") == pytest.approx(th.LOCKOUT_S)


def test_one_name_from_many_addresses_meets_a_higher_ceiling():
    clock = Clock()
    t = SignInThrottle(clock)
    n = th.LIMITS["user"]
    for i in range(n):  # 4 guesses from each of many addresses: no pair is locked
        assert _fail(t, "olga", f"10.9.{i // 4}.{i % 4}").attempt is not None
    v = t.begin("olga", "192.168.1.1")
    assert v.attempt is None and v.reason == "too many failures"
    assert t.begin("ada", "10.9.0.0").attempt is not None  # other names are not held up


def test_the_table_is_bounded_without_forgetting_a_live_lock():
    clock = Clock()
    t = SignInThrottle(clock, max_keys=10_000)
    for _ in range(5):
        _fail(t, "olga", "10.0.0.66")
    assert t.locked("olga", "10.0.0.66") > 0
    for i in range(12_000):  # one failure each for 12,000 made-up names and addresses
        clock.t += 0.001
        _fail(t, f"name{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(t) <= 10_000
    assert t.locked("olga", "10.0.0.66") > 0  # the lock an attacker wanted gone is still there
    assert t.begin("olga", "10.0.0.66").attempt is None


def test_a_right_password_is_not_counted_and_leaves_nothing_behind():
    t = SignInThrottle(Clock())
    for _ in range(20):
        v = t.begin("ada", "127.0.0.1")
        assert v.attempt is not None
        t.succeeded(v.attempt)
    assert len(t) == 0


def test_the_hashing_gate_lets_few_run_and_turns_the_rest_away_at_once():
    gate = HashGate(concurrency=2, queue=3)
    release = threading.Event()
    running, peak, lock = [0], [0], threading.Lock()

    def work() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1

    admitted = [gate.try_enter() for _ in range(8)]
    assert admitted == [True] * 5 + [False] * 3
    threads = [threading.Thread(target=gate.run, args=(work,)) for _ in range(5)]
    for th_ in threads:
        th_.start()
    release.set()
    for th_ in threads:
        th_.join(10)
    assert peak[0] == 2 and gate.admitted == 0 and gate.try_enter()


def test_refusals_are_one_row_then_one_count_per_window():
    clock = Clock()
    log = RefusalLog(window_s=60, clock=clock)
    rows = []
    for _ in range(315):
        rows += log.note("olga", "10.0.0.66", "too many failures")
        clock.t += 0.01
    rows += log.note("olga", "10.0.0.7", "too many failures")  # another desk: its own row
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("olga", "sign-in refused", "too many failures", "10.0.0.66"),
        ("olga", "sign-in refused", "too many failures", "10.0.0.7"),
    ]
    assert log.due() == []
    clock.t += 60
    (summed, *rest) = log.due() + log.drain()
    assert summed[2].startswith("too many failures: 314 more refused since ")
    assert rest == []  # the second desk's window had nothing more
    assert log.drain() == []


def test_refused_windows_are_bounded():
    clock = Clock()
    log = RefusalLog(window_s=60, clock=clock, max_keys=100)
    for i in range(1000):
        log.note(f"n{i}", "10.0.0.1", "too many failures")
        log.note(f"n{i}", "10.0.0.1", "too many failures")
    assert len(log.drain()) == 100  # the open ones; the older were written as they went


# ---------------------------------------------------------------- CSV cells

TRIGGERS = "=+-@\t\r"


def _formula_cells(line: str) -> list[str]:
    """Cells of `line` that start like a formula, split as a careless spreadsheet would:
    on either separator, quotes ignored, spaces stripped (a number such as -12.5 is data)."""
    return [c for c in re.split(r"[,;]", line)
            if c.strip(' "')[:1] in tuple(TRIGGERS) and not _number(c.strip(' "'))]  # fmt: skip


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("sep", [",", ";"])
def test_csv_cells_are_quoted_and_defused(sep):
    values = ["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1",
              "stolen;=cmd()", "stolen,=cmd()", "a, -1", "'=already", 'say "hi"', "", None,
              -12.5, 7, "Müller"]  # fmt: skip
    out = io.StringIO()
    w = csvsafe.writer(out, sep)
    w.writerow(values)
    text = out.getvalue()
    # every cell in quotes
    assert text.startswith('"') and text.count(f'"{sep}"') == len(values) - 1
    (row,) = list(csv.reader(io.StringIO(text, newline=""), delimiter=sep))
    assert row[0] == "'=HYPERLINK(\"http://x\")" and row[1] == "'+1" and row[6] == "stolen;'=cmd()"
    assert row[13] == "-12.5" and row[14] == "7" and row[12] == ""  # numbers stay numbers
    for cell in row[:12]:
        assert cell[:1] not in tuple(TRIGGERS)
    for line in text.replace("\r\n", "\n").split("\n"):  # embedded breaks too
        assert _formula_cells(line) == [], line
    assert [csvsafe.restore_cell(c) for c in row[:12]] == [
        "" if v is None else v for v in values[:12]]  # fmt: skip


def test_restore_undoes_exactly_what_safe_did():
    alphabet = ",;\t\r\n '=+-@aZ\""
    rng = random.Random(7)
    danger = re.compile(r"(?:^|(?<=[,;\t\r\n])) *[=+\-@\t\r]")
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        safe = csvsafe.safe_cell(text)
        assert isinstance(safe, str) and not danger.search(safe), (text, safe)
        assert csvsafe.restore_cell(safe) == text


def test_only_comma_or_semicolon_separate():
    with pytest.raises(ValueError, match="separator"):
        csvsafe.writer(io.StringIO(), "|")


# ---------------------------------------------------------------- descriptors


def test_the_open_file_limit_is_raised_and_the_console_kept_under_it():
    code = (
        "import resource\n"
        "from edge.collector.console.connections import reserve_descriptors\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "allowed = reserve_descriptors(10**6, reserve=128)\n"
        "now, hard2 = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "print(now == hard, allowed, (now - 128) // 2, hard)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    raised, allowed, expected, hard = out.stdout.split()
    assert raised == "True"  # soft limit up to the hard one
    assert int(allowed) == int(expected) < int(hard)  # the console keeps well under it
