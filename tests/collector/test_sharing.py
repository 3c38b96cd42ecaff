"""The agreements in a running collector: a change, a revocation and an expiry take effect
without a restart, each audited and told to the parts that share; a bad edit keeps what
was in force and is audited once."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from pathlib import Path

from edge.collector.agreements import Agreements
from edge.collector.sharing import AgreementsService

EXAMPLES = Path(__file__).parents[2] / "config" / "agreements"
UTC = dt.UTC


def _dir(tmp_path: Path) -> Path:
    d = tmp_path / "agreements"
    d.mkdir()
    shutil.copy(EXAMPLES / "agencies.yaml", d)
    shutil.copy(EXAMPLES / "lt-vsat--pl-sg.yaml", d)
    return d


class Clock:
    def __init__(self, at: dt.datetime):
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


def test_a_revocation_is_audited_and_told_to_the_parts_that_share(tmp_path):
    d = _dir(tmp_path)
    audit: list[tuple[str, str]] = []
    told: list[tuple[Agreements, list[str]]] = []
    clock = Clock(dt.datetime(2026, 6, 1, tzinfo=UTC))
    service = AgreementsService(d, audit=lambda a, t: audit.append((a, t)), clock=clock)
    service.subscribe(lambda agreements, lines: told.append((agreements, lines)))
    assert service.current().list_granted("pl-sg", "stolen-pl", "lt-vsat", at=clock.at)

    (d / "lt-vsat--pl-sg.yaml").unlink()
    assert service.check()
    assert not service.current().list_granted("pl-sg", "stolen-pl", "lt-vsat", at=clock.at)
    assert [a for a, _ in audit] == ["agreements changed"]
    assert "LT-PL-2026-017 revoked" in audit[0][1]
    assert len(told) == 1 and told[0][0] is service.current()
    assert not service.check()  # nothing new: nobody is told twice
    assert len(told) == 1


def test_a_bad_edit_keeps_the_agreements_in_force_and_is_audited_once(tmp_path):
    d = _dir(tmp_path)
    audit: list[tuple[str, str]] = []
    clock = Clock(dt.datetime(2026, 6, 1, tzinfo=UTC))
    service = AgreementsService(d, audit=lambda a, t: audit.append((a, t)), clock=clock)
    f = d / "lt-vsat--pl-sg.yaml"
    f.write_text(f.read_text().replace("hits_back: true", "hits_bak: true", 1))
    for _ in range(3):
        service.check()
    assert [a for a, _ in audit] == ["agreements rejected"]
    assert "hits_bak" in audit[0][1] and "lt-vsat--pl-sg.yaml" in audit[0][1]
    assert service.current().hits_back("pl-sg", "stolen-pl", "lt-vsat", at=clock.at)


def test_an_expiry_is_a_change_without_any_edit(tmp_path):
    d = _dir(tmp_path)
    clock = Clock(dt.datetime(2027, 12, 31, 23, 0, tzinfo=UTC))
    audit: list[tuple[str, str]] = []
    service = AgreementsService(d, audit=lambda a, t: audit.append((a, t)), clock=clock)
    assert service.current().partners("lt-vsat", at=clock.at) == {"pl-sg"}
    clock.at = dt.datetime(2028, 1, 1, tzinfo=UTC)
    assert service.check()
    assert any("expired" in t for _, t in audit)
    assert service.current().partners("lt-vsat", at=clock.at) == set()


def test_the_thread_takes_a_change_without_being_asked(tmp_path):
    d = _dir(tmp_path)
    changed = threading.Event()
    service = AgreementsService(d, poll_s=0.02)
    service.subscribe(lambda agreements, lines: changed.set())
    service.start()
    try:
        (d / "lt-vsat--pl-sg.yaml").unlink()
        assert changed.wait(10), "the watching thread never saw the revocation"
        assert service.alive()
    finally:
        service.stop()
    assert not service.alive()


def test_no_directory_shares_nothing(tmp_path):
    service = AgreementsService(None)
    service.start()
    assert service.alive() and not service.check()
    assert service.current().partners("lt-vsat") == set()
    service.stop()
