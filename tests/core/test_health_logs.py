"""Log lines as journald keeps them: one line an event, level and camera in each, no secrets."""

from __future__ import annotations

import io
import logging
import os
import threading

import pytest

from edge.core.logs import setup_logging, to_journal

SECRET = "S3cr3tPa55"
URL = f"rtsp://admin:{SECRET}@10.1.2.3:554/Streaming/101"


@pytest.fixture
def lines():
    """Log through the node's own handler into a buffer; hand back the lines written."""
    out = io.StringIO()
    handler = setup_logging(logging.INFO, stream=out, journal=True)
    yield lambda: out.getvalue().splitlines()
    logging.getLogger().removeHandler(handler)


def log_in_thread(name: str, fn) -> None:
    t = threading.Thread(target=fn, name=name)
    t.start()
    t.join()


def test_each_record_is_one_line_with_priority_level_and_camera(lines):
    log = logging.getLogger("edge.test")
    log_in_thread("camera-a2-inbound", lambda: log.warning("frozen (picture unchanged)"))
    log_in_thread("source-a2-outbound-reader", lambda: log.info("live"))
    log.error("node trouble")
    assert lines() == [
        "<4>WARNING camera=a2-inbound edge.test: frozen (picture unchanged)",
        "<6>INFO camera=a2-outbound edge.test: live",
        "<3>ERROR camera=- edge.test: node trouble",
    ]


def test_a_traceback_stays_on_its_line_and_loses_its_secrets(lines):
    log = logging.getLogger("edge.test")

    def fail() -> None:
        try:
            raise OSError(f"cannot open {URL}")
        except OSError:
            log.exception("camera failed on %s", URL)

    log_in_thread("camera-gate", fail)
    (line,) = lines()
    assert line.startswith("<3>ERROR camera=gate edge.test: camera failed on rtsp://***@10.1.2.3")
    assert "Traceback (most recent call last):\\n" in line and "OSError: cannot open" in line
    assert SECRET not in line


def test_the_camera_can_be_named_explicitly(lines):
    logging.getLogger("edge.test").info("read", extra={"camera": "north"})
    assert lines() == ["<6>INFO camera=north edge.test: read"]


def test_outside_the_journal_lines_carry_their_own_time():
    out = io.StringIO()
    handler = setup_logging(logging.INFO, stream=out, journal=False)
    try:
        logging.getLogger("edge.test").info("hello")
    finally:
        logging.getLogger().removeHandler(handler)
    line = out.getvalue().strip()
    assert line[:2] == "20" and line.endswith("INFO camera=- edge.test: hello")


def test_the_journal_is_recognised_by_its_stream(tmp_path):
    path = tmp_path / "stream"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        assert to_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not to_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not to_journal(stream, {})
    assert not to_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})
