"""The outbox on a real filesystem filled to the last byte (a 24 MiB tmpfs of its own).

The tmpfs is mounted in a private mount namespace (`unshare --mount`) that ends with
the child process, so nothing outlives the test; where mounts are not allowed the
test skips.  It shows what `max_page_count` cannot: SQLite needs room in its WAL even
to delete, so on a disk full to the last byte the outbox's reserve is what lets it
evict reads for hits, and once that is spent hits wait in memory until room returns.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.link import REPO, child_env

CHILD = r"""
import json, os, sys
sys.path.insert(0, sys.argv[2])
from helpers.link import make_hit
from edge.node.outbox import Outbox

disk = sys.argv[1]
MB = 1024 * 1024
ob = Outbox(os.path.join(disk, "outbox.db"), retention_s=86400, min_free_bytes=8 * MB)
reserve = os.path.exists(os.path.join(disk, "outbox.db-reserve"))
for i in range(100):
    ob.record_read("cam1", f"R{i:04d}", crop_jpeg=b"\xff\xd8\xff" + bytes(20_000))
filler = os.open(os.path.join(disk, "filler"), os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(filler, bytes(64 * 1024))
except OSError as exc:
    assert exc.errno == 28, exc
try:
    while True:
        os.write(filler, bytes(512))
except OSError:
    pass
os.close(filler)
full_at = ob.stats()["free_bytes"]
for n in range(150):
    ob.add_hit(make_hit(n, crop=30_000, scene=50_000))
first = ob.stats()
for n in range(150, 400):
    ob.add_hit(make_hit(n, crop=30_000, scene=50_000))
second = ob.stats()
read_refused = ob.record_read("cam1", "LATE") is None
os.unlink(os.path.join(disk, "filler"))
left = ob.retry()
order = [r[0] for r in ob._db.execute("SELECT hit_id FROM hits ORDER BY seq")]
crops = ob._db.execute("SELECT count(*) FROM hits WHERE length(crop) > 0").fetchone()[0]
print(json.dumps({
    "reserve_at_start": reserve, "full_at": full_at, "first": first, "second": second,
    "read_refused": read_refused, "left": left, "after": ob.stats(), "crops": crops,
    "in_order": order == [make_hit(n).hit_id for n in range(400)],
}))
ob.close()
"""


def on_own_tmpfs(tmp_path: Path, script: Path, size_mb: int) -> subprocess.CompletedProcess:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mount = f'mount -t tmpfs -o size={size_mb}m tmpfs "$1" || exit 97; shift; exec "$@"'
    for ns in (["--mount"], ["--user", "--map-root-user", "--mount"]):
        proc = subprocess.run(
            [unshare, *ns, "--propagation", "private", "sh", "-c", mount, "sh", str(mnt),
             sys.executable, str(script), str(mnt), str(REPO / "tests")],
            capture_output=True, text=True, timeout=120, env=child_env())
        refused = proc.returncode == 97 or (proc.returncode != 0
                                             and proc.stderr.startswith("unshare:"))
        if not refused:
            return proc
    pytest.skip(f"cannot mount a tmpfs in a private namespace here: {proc.stderr.strip()}")


def test_a_disk_full_to_the_last_byte_loses_no_hit(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = on_own_tmpfs(tmp_path, script, 24)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["reserve_at_start"] and r["full_at"] < 64 * 1024
    # the reserve given back, reads evicted: the first 150 hits are all on disk, without
    # their scenes (the disk is under its floor), each with its crop
    first = r["first"]
    assert first["reserve_released"] == 1 and first["evicted_reads"] > 0
    assert first["backlog"] == 150 and first["waiting_hits"] == 0
    assert first["low_disk_hits"] > 0
    # with the reserve and the reads spent, hits wait in memory and the store says why
    second = r["second"]
    assert second["reads"] == 0 and second["waiting_hits"] > 0
    assert second["backlog"] + second["waiting_hits"] == 400 and second["dropped_hits"] == 0
    assert "full" in second["store_error"] and r["read_refused"]
    # room again: every hit stored, once, in order, each with its crop
    assert r["left"] == 0 and r["after"]["backlog"] == 400 and r["in_order"]
    assert r["crops"] == 400 and r["after"]["store_error"] is None
