"""The collector's pictures on a full disk: a failed write leaves the segment as it was, and the
start-up check cuts off what a failed or torn write left, so no picture reads another's bytes."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zmq
from helpers.link import child_env, make_hit, make_keys, start_collector, wait_for

from edge.collector.store import HitStore
from edge.core.keys import make_curve_client
from edge.core.link_protocol import JPEG_MAGIC, Ack, HitMessage, decode_message

HERE = Path(__file__).resolve().parent  # the child imports this file's hit() from here


def picture(n: int, kind: str, size: int) -> bytes:
    """A JPEG-shaped picture whose every byte says which hit and kind it belongs to."""
    body = (f"{kind}:{n:06d};".encode() * (size // 12 + 1))[: size - len(JPEG_MAGIC) - 2]
    return JPEG_MAGIC + body + b"\xff\xd9"


def hit(n: int, crop: int = 3000, scene: int = 20_000) -> HitMessage:
    return dataclasses.replace(
        make_hit(n, run="images"),
        crop_jpeg=picture(n, "crop", crop),
        scene_jpeg=picture(n, "scene", scene),
    )


def assert_pictures(store: HitStore, hits: list[HitMessage]) -> None:
    for h in hits:
        assert store.image(h.hit_id, "crop") == h.crop_jpeg, f"crop of {h.hit_id}"
        assert store.image(h.hit_id, "scene") == h.scene_jpeg, f"scene of {h.hit_id}"


class FullDisk:
    """Writes to segment files as a disk with `room` bytes left does them: a write that
    does not fit writes what fits and says so (a short write); the next one fails with
    ENOSPC.  Put over os.write/writev/pwrite/pwritev, whichever the image log uses."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, room: int):
        self.room = room
        self.refused = 0
        real = {name: getattr(os, name) for name in ("write", "writev", "pwrite", "pwritev")}

        def wrap(name: str):
            call = real[name]

            def write(fd: int, data, *rest):  # type: ignore[no-untyped-def]
                if not os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
                    return call(fd, data, *rest)
                blob = b"".join(data) if name.endswith("v") else bytes(data)
                if self.room <= 0:
                    self.refused += 1
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                take = blob[: self.room]
                self.room -= len(take)
                if name.startswith("p"):
                    return real["pwrite"](fd, take, *rest)
                return real["write"](fd, take)

            return write

        for name in real:
            monkeypatch.setattr(os, name, wrap(name))


def segment_file(store: HitStore) -> tuple[str, int]:
    """The segment being written, and its size."""
    path = max(store.images.directory.glob("*.seg"))
    return str(path), path.stat().st_size


def test_a_full_disk_leaves_the_segment_as_it_was_and_later_pictures_are_right(
    tmp_path, monkeypatch
):
    store = HitStore(tmp_path / "hits.db")
    before = [hit(n) for n in range(8)]
    store.commit(before[:4])
    store.commit(before[4:])
    path, good = segment_file(store)

    disk = FullDisk(monkeypatch, room=26_634)  # part of the next batch fits, not all
    for n in range(8, 14):
        with pytest.raises(OSError) as e:
            store.commit([hit(n), hit(100 + n)])
        assert e.value.errno == errno.ENOSPC
        assert os.path.getsize(path) == good  # the failed write was cut off again
    assert disk.refused >= 6
    assert store.count() == 8  # nothing stored: nothing to acknowledge

    monkeypatch.undo()  # space is freed
    after = [hit(n) for n in range(200, 232)]
    for h in after:
        store.commit([h])
    assert_pictures(store, before + after)
    store.close()

    again = HitStore(tmp_path / "hits.db")  # and after a restart
    assert_pictures(again, before + after)
    assert not again.mended
    more = [hit(n) for n in range(300, 304)]
    again.commit(more)
    assert_pictures(again, before + after + more)
    again.close()


def test_a_hit_that_cannot_be_stored_is_acknowledged_only_once_it_is(tmp_path, monkeypatch):
    keys = make_keys(tmp_path)
    public, secret = keys.edge("edge1")
    ctx = zmq.Context()
    service = start_collector(tmp_path, keys, ctx)
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    make_curve_client(sock, public, secret, keys.server_public)
    sock.connect(service.endpoint)
    try:
        FullDisk(monkeypatch, room=5000)
        h = hit(1)
        sock.send_multipart(h.encode())
        wait_for(lambda: service.stats().get("store_errors", 0) >= 1, 10, "the failed commit")
        assert not sock.poll(0)  # acks go out only after a commit, and none succeeded
        monkeypatch.undo()
        sock.send_multipart(h.encode())  # sent again, as an edge's sender does
        assert sock.poll(10_000)
        msg = decode_message(sock.recv_multipart())
        assert isinstance(msg, Ack) and h.hit_id in msg.ids
    finally:
        sock.close()
        service.stop()
        ctx.term()
    store = HitStore(service.config.db_path)
    assert_pictures(store, [h])
    assert store.count() == 1 and not store.mended
    store.close()


def test_a_full_database_takes_the_batchs_pictures_back(tmp_path):
    store = HitStore(tmp_path / "hits.db")
    first = [hit(n) for n in range(4)]
    store.commit(first)
    path, good = segment_file(store)
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "disk is full"
    failed = 0
    for n in range(10, 40):
        try:
            store.commit([hit(n, scene=5000)])
        except sqlite3.OperationalError as e:
            assert "full" in str(e)
            failed += 1
            assert os.path.getsize(path) == good  # not a byte more for every retry
        else:
            good = os.path.getsize(path)
    assert failed
    store.db.execute("PRAGMA max_page_count=1073741823")
    later = [hit(n) for n in range(100, 132)]
    for h in later:
        store.commit([h])
    stored = [hit(n, scene=5000) for n in range(10, 40)]
    stored = [h for h in stored if store.image(h.hit_id, "crop") is not None]
    assert_pictures(store, first + stored + later)
    store.close()
    again = HitStore(tmp_path / "hits.db")
    assert_pictures(again, first + stored + later)
    assert not again.mended
    again.close()


def test_start_up_cuts_off_garbage_appended_to_a_segment(tmp_path):
    store = HitStore(tmp_path / "hits.db")
    first = [hit(n) for n in range(5)]
    store.commit(first)
    path, good = segment_file(store)
    store.close()
    with open(path, "ab") as f:  # what a failed write or a crash before the commit leaves
        f.write(b"\xaa" * 26_634)

    store = HitStore(tmp_path / "hits.db")
    later = [hit(n) for n in range(10, 42)]
    for h in later:
        store.commit([h])
    assert_pictures(store, first + later)
    assert store.mended.tail_bytes == 26_634 and store.mended.lost_pictures == 0
    assert os.path.getsize(path) == good + sum(len(h.crop_jpeg + h.scene_jpeg) for h in later)
    store.close()


def test_start_up_forgets_pictures_whose_bytes_are_gone(tmp_path):
    store = HitStore(tmp_path / "hits.db")
    kept = [hit(n) for n in range(4)]
    torn = hit(4)
    store.commit(kept)
    store.commit([torn])
    path, size = segment_file(store)
    store.close()
    os.truncate(path, size - len(torn.scene_jpeg) // 2)  # the last picture half gone

    store = HitStore(tmp_path / "hits.db")
    later = [hit(n) for n in range(10, 20)]
    store.commit(later)
    assert_pictures(store, kept + later)
    assert store.image(torn.hit_id, "crop") == torn.crop_jpeg
    assert store.image(torn.hit_id, "scene") is None  # said to be missing, not wrong
    assert store.mended.lost_pictures == 1
    store.close()


def test_segment_files_the_database_did_not_write_are_left_alone(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    foreign = images / "000000.seg"
    foreign.write_bytes(b"pictures of a database that is gone" * 100)
    store = HitStore(tmp_path / "hits.db")
    hits = [hit(n) for n in range(3)]
    store.commit(hits)
    assert foreign.read_bytes() == b"pictures of a database that is gone" * 100
    assert_pictures(store, hits)
    store.close()
    store = HitStore(tmp_path / "hits.db")
    assert_pictures(store, hits)
    assert foreign.read_bytes() == b"pictures of a database that is gone" * 100
    assert not store.mended and store.images.segment == 1
    store.close()


_FSIZE_CHILD = textwrap.dedent("""
    import dataclasses, json, resource, signal, sys
    sys.path.insert(0, sys.argv[2])
    from test_collector_images import hit
    from edge.collector.store import HitStore

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG rather than death
    path = sys.argv[1]
    store = HitStore(path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # The segment reaches the limit first (the WAL stays under 1.2 MB).
    resource.setrlimit(resource.RLIMIT_FSIZE, (2_500_000, hard))
    stored, failed = [], 0
    for n in range(40):
        h = hit(n, scene=150_000)
        try:
            store.commit([h])
            stored.append(n)
        except OSError as e:
            failed += 1
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    for n in range(100, 132):
        store.commit([hit(n)])
        stored.append(n)
    store.close()
    print(json.dumps({"stored": stored, "failed": failed}))
""")


def test_a_real_short_write_at_the_file_size_limit(tmp_path):
    """The kernel's own short write and EFBIG (RLIMIT_FSIZE), in a process of its own."""
    out = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, str(tmp_path / "hits.db"), str(HERE)],
        capture_output=True, text=True, env=child_env(), timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["failed"] > 0 and len(result["stored"]) >= 32
    store = HitStore(tmp_path / "hits.db")
    assert_pictures(store, [hit(n, scene=150_000 if n < 100 else 20_000) for n in result["stored"]])
    assert store.count() == len(result["stored"])
    assert not store.mended
    store.close()


def test_a_partners_pictures_leave_the_page_cache_and_read_back_right(tmp_path, monkeypatch):
    advised: list[tuple[int, int, int]] = []
    real = os.posix_fadvise

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        advised.append((offset, length, advice))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    store = HitStore(tmp_path / "hits.db")
    try:
        edge_hits, partner_hits = [hit(1), hit(2)], [hit(3), hit(4)]
        store.commit(edge_hits)
        assert advised == []  # an edge's hits: as before
        store.commit(partner_hits, agency="pl-sg")
        total = sum(len(h.crop_jpeg) + len(h.scene_jpeg) for h in partner_hits)
        assert advised == [(advised[0][0], total, os.POSIX_FADV_DONTNEED)]
        store.commit(partner_hits, agency="pl-sg")  # duplicates: nothing written, nothing advised
        assert len(advised) == 1
        assert_pictures(store, edge_hits + partner_hits)
    finally:
        store.close()
    store = HitStore(tmp_path / "hits.db")  # after a restart: the pictures as they were
    try:
        assert_pictures(store, edge_hits + partner_hits)
    finally:
        store.close()
