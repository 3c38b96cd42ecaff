#!/usr/bin/python3
"""A camera for the tests: GStreamer's RTSP server on loopback, basic auth, H.264 at a set rate.

Run with Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0), not the
project's venv: GObject introspection is a system package. It serves the JPEG files of
a folder, looped, as H.264 at rtsp://127.0.0.1:PORT/cam, to one user whose password comes
from $RTSP_PASSWORD (never the command line, which `ps` shows). Each client gets its own
encoder, started on a key frame, as most cameras give each session.

The test steers it through stdin, one command a line, each answered `ok ...` on stdout:
  rate R          R frames a second, evenly spaced (the camera slowing down: `rate 3`)
  vfr R TICK      frames at irregular multiples of 1/TICK s averaging R a second, as a
                  camera whose sensor runs at TICK Hz and drops what it cannot expose;
                  FFmpeg then reports TICK as the stream's rate (from the timestamps,
                  and from the claim, which is TICK when started with --vfr-tick)
  quit            stop
Stdout also says `listening rtsp://127.0.0.1:PORT/cam` once the port is bound,
`connected` as each client connects (before it has given its password), and
`streaming N`, `frames N K`, `gone N` as client N's frames start, go out and stop.

For measuring from a clock the node does not own: `--push-log FILE` gets a line
`N K WALL` for each frame K (counted from 0 for each client N, the loop not restarting
the count) with the UNIX time just before it was pushed into the encoder, and
`--then FILE` serves that one JPEG forever after the first time through, instead of
looping (an empty scene after the clip).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
except (ImportError, ValueError) as exc:  # ValueError: gi without the typelib
    MISSING = f"{type(exc).__name__}: {exc}"
else:
    MISSING = ""

# What PIPELINE and the server need; `--check` looks for each.
ELEMENTS = ("appsrc", "jpegdec", "videoconvert", "openh264enc", "h264parse", "rtph264pay")

# Baseline profile, no B-frames: what a camera sends, and every frame goes out as it
# is encoded. A GOP of a second lets a decoder that lost its place recover quickly.
PIPELINE = (
    "( appsrc name=src is-live=true format=time do-timestamp=false"
    " caps=image/jpeg,framerate={claim} ! jpegdec ! videoconvert ! video/x-raw,format=I420"
    " ! openh264enc name=enc complexity=low rate-control=bitrate bitrate={bitrate}"
    " gop-size={gop} enable-frame-skip=false"
    " ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 perfect-rtptime=false )"
)


_say_lock = threading.Lock()


def say(line: str) -> None:
    """One line to the test (feeders and the command reader say things at once)."""
    with _say_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Schedule:
    """When the next frame is due, shared by every client's feeder; changed by commands."""

    def __init__(self, rate: float) -> None:
        self._lock = threading.Lock()
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        with self._lock:
            self._mean, self._tick = rate, 0.0

    def set_vfr(self, rate: float, tick: float) -> None:
        if not 0 < rate < tick:
            raise ValueError(f"need 0 < rate < tick, got {rate}, {tick}")
        with self._lock:
            self._mean, self._tick = rate, tick

    def mode(self) -> tuple[float, float]:
        """(frames a second, sensor ticks a second: 0 for evenly spaced frames)."""
        with self._lock:
            return self._mean, self._tick


class Feeder:
    """Pushes one client's frames into its appsrc when due, from the appsrc's own thread."""

    def __init__(self, number: int, frames: list[bytes], schedule: Schedule, seed: int,
                 *, then: bytes | None = None, push_log: PushLog | None = None) -> None:
        self.number = number
        self.frames = frames
        self.then = then  # served after the first time through, instead of looping
        self.push_log = push_log
        self.schedule = schedule
        self.stopped = threading.Event()
        self._index = 0
        self._first: float | None = None  # monotonic time of the first frame
        self._first_pts = 0
        self._t = 0.0  # seconds from the first frame to the next
        self._rng = random.Random(seed)
        self._ideal = 0.0  # where the next frame would be, in sensor ticks, were it regular
        self._tick_at = 0  # the sensor tick of the last frame

    def interval(self) -> float:
        """Seconds from this frame to the next."""
        mean, tick = self.schedule.mode()
        if not tick:
            self._ideal = self._tick_at = 0
            return 1.0 / mean
        # Each frame on a whole tick near where a regular one would be, anchored to that
        # regular timeline so that the rate averages out exactly: 18 fps on a 60 Hz
        # sensor is 1 to 6 ticks apart, 3.33 on average.
        if self._ideal < self._tick_at:
            self._ideal = float(self._tick_at)
        self._ideal += tick / mean
        at = max(self._tick_at + 1, round(self._ideal + self._rng.uniform(-1.5, 1.5)))
        step, self._tick_at = at - self._tick_at, at
        return step / tick

    def need_data(self, src: Gst.Element, _length: int) -> None:
        now = time.monotonic()
        if self._first is None:
            clock = src.get_clock()
            running = clock.get_time() - src.get_base_time() if clock is not None else 0
            self._first, self._first_pts = now, max(0, running)
            say(f"streaming {self.number}")
        due = self._first + self._t
        # Wait in slices: the pipeline's shutdown waits for this thread to return.
        while not self.stopped.is_set() and time.monotonic() < due:
            time.sleep(min(0.02, max(0.0, due - time.monotonic())))
        if self.stopped.is_set():
            return
        if self.then is not None and self._index >= len(self.frames):
            data = self.then
        else:
            data = self.frames[self._index % len(self.frames)]
        buf = Gst.Buffer.new_wrapped(data)
        interval = self.interval()
        buf.pts = self._first_pts + int(self._t * Gst.SECOND)
        buf.duration = int(interval * Gst.SECOND)
        if self.push_log is not None:
            self.push_log.write(self.number, self._index, time.time())
        if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
            self.stopped.set()
            return
        self._index += 1
        self._t += interval
        if self._index % 50 == 0:
            say(f"frames {self.number} {self._index}")


class PushLog:
    """`N K WALL` lines, one a pushed frame, flushed as written (a benchmark reads them
    while the server runs, and the server ends by SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._file = path.open("a", buffering=1)

    def write(self, client: int, index: int, wall: float) -> None:
        with self._lock:
            self._file.write(f"{client} {index} {wall:.6f}\n")


class Camera:
    """The RTSP server, its one mount point and the feeders of its clients."""

    def __init__(self, args: argparse.Namespace, password: str, frames: list[bytes]) -> None:
        self.frames = frames
        self.then = args.then.read_bytes() if args.then is not None else None
        self.push_log = PushLog(args.push_log) if args.push_log is not None else None
        self.schedule = Schedule(args.rate)
        self.seed = args.seed
        self.clients = 0
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address("127.0.0.1")
        self.server.set_service(str(args.port))
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, password), token)
        self.server.set_auth(auth)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            PIPELINE.format(claim=args.claim, bitrate=args.bitrate, gop=max(1, round(args.rate)))
        )
        factory.set_shared(False)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("viewer", "media.factory.access", True)
        permissions.add_permission_for_role("viewer", "media.factory.construct", True)
        factory.set_permissions(permissions)
        factory.connect("media-configure", self._configure)
        self.server.get_mount_points().add_factory("/cam", factory)
        self.server.connect("client-connected", lambda _server, _client: say("connected"))

    def _configure(self, _factory: GstRtspServer.RTSPMediaFactory,
                   media: GstRtspServer.RTSPMedia) -> None:
        self.clients += 1
        feeder = Feeder(self.clients, self.frames, self.schedule, self.seed + self.clients,
                        then=self.then, push_log=self.push_log)
        src = media.get_element().get_child_by_name("src")
        src.connect("need-data", feeder.need_data)
        media.connect("unprepared", lambda _m: self._gone(feeder))

    def _gone(self, feeder: Feeder) -> None:
        feeder.stopped.set()
        say(f"gone {feeder.number}")

    def command(self, line: str, loop: GLib.MainLoop) -> None:
        words = line.split()
        try:
            if words[:1] == ["rate"] and len(words) == 2:
                self.schedule.set_rate(float(words[1]))
            elif words[:1] == ["vfr"] and len(words) == 3:
                self.schedule.set_vfr(float(words[1]), float(words[2]))
            elif words == ["quit"]:
                GLib.idle_add(loop.quit)
            else:
                say(f"error unknown command {line!r}")
                return
        except ValueError as exc:
            say(f"error {exc}")
            return
        say(f"ok {line}")


def load_frames(folder: Path) -> list[bytes]:
    frames = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
    if not frames:
        raise SystemExit(f"{folder}: no *.jpg frames to serve")
    return frames


def check() -> str:
    """What this server lacks here ("" when nothing): Python bindings, typelibs, elements."""
    if MISSING:
        return MISSING
    Gst.init(None)
    absent = [name for name in ELEMENTS if Gst.ElementFactory.find(name) is None]
    return f"GStreamer elements absent: {' '.join(absent)}" if absent else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="say whether everything the server needs is here, and exit")
    parser.add_argument("--port", type=int)
    parser.add_argument("--frames", type=Path, help="folder of *.jpg")
    parser.add_argument("--user", default="viewer")
    parser.add_argument("--rate", type=float, default=18.0)
    parser.add_argument("--vfr-tick", type=float, default=0.0,
                        help="start in vfr mode at --rate on this sensor clock (Hz)")
    parser.add_argument("--claim", default=None,
                        help="the frame rate the stream claims, e.g. 60/1 (default: the rate, "
                        "or the sensor clock with --vfr-tick)")
    parser.add_argument("--bitrate", type=int, default=4_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--push-log", type=Path,
                        help="append `client index wall` for each frame pushed")
    parser.add_argument("--then", type=Path,
                        help="a JPEG served forever after the first time through (no loop)")
    args = parser.parse_args()
    if args.check:
        lacking = check()
        print(lacking or "ok")
        return 1 if lacking else 0
    if args.port is None or args.frames is None:
        parser.error("--port and --frames are needed")
    if MISSING:
        print(MISSING, file=sys.stderr)
        return 1
    password = os.environ.get("RTSP_PASSWORD", "")
    if not password:
        print("set RTSP_PASSWORD", file=sys.stderr)
        return 2
    # A variable-rate camera claims its sensor's clock, as the camera did.
    args.claim = args.claim or f"{round(args.vfr_tick or args.rate)}/1"
    Gst.init(None)
    camera = Camera(args, password, load_frames(args.frames))
    if args.vfr_tick:
        camera.schedule.set_vfr(args.rate, args.vfr_tick)
    loop = GLib.MainLoop()
    if camera.server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    say(f"listening rtsp://127.0.0.1:{camera.server.get_bound_port()}/cam")

    def read_commands() -> None:
        for line in sys.stdin:
            if line.strip():
                camera.command(line.strip(), loop)
        GLib.idle_add(loop.quit)  # stdin closed: the test has gone

    threading.Thread(target=read_commands, daemon=True).start()
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
