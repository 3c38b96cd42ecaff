#!/usr/bin/python3
"""Hang one thread of a running process: the one found executing inside a given library.

    hang_thread.py PID LIBRARY [--timeout S]

For a test of a watchdog: the thread is stopped with ptrace (PTRACE_SEIZE and
PTRACE_INTERRUPT stop that thread alone; the process's other threads go on), as a
pipeline stuck in a call that never returns. Each thread is stopped for an instant in
turn, and let go again unless its program counter lies in a mapping of a file whose path
contains LIBRARY (e.g. "onnxruntime": the thread is inside a model's run, where Python's
GIL is released, so the rest of the process can notice the hang). The chosen thread is
held until the process dies; then this exits. One JSON line on stdout says what was
stopped ({"stopped": TID, ...}), or why nothing was; a last one says how the thread ended.

Run as root (CAP_SYS_PTRACE); stdlib only, for any python3. Killing this lets the thread
go on: the kernel detaches a dead tracer's tracees.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import sys
import time

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000  # __WALL: wait for threads too

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


def ptrace(request: int, tid: int) -> None:
    if _libc.ptrace(request, tid, None, None) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request:#x}, {tid}): {os.strerror(err)}")


def mappings(pid: int) -> list[tuple[int, int, str]]:
    found = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and "x" in parts[1]:
                low, high = (int(x, 16) for x in parts[0].split("-"))
                found.append((low, high, parts[5].strip()))
    return found


def where(pid: int, tid: int, maps: list[tuple[int, int, str]]) -> tuple[int | None, str]:
    """The stopped thread's program counter and the file mapped there ('' if none, or
    the thread is inside a system call)."""
    with open(f"/proc/{pid}/task/{tid}/syscall") as f:
        fields = f.read().split()
    if not fields or fields[0] != "-1":  # in a system call, or 'running'
        return None, ""
    pc = int(fields[-1], 16)
    for low, high, path in maps:
        if low <= pc < high:
            return pc, path
    return pc, ""


def stop_one(pid: int, tid: int) -> bool:
    """Seize and stop `tid`; False if it is gone."""
    try:
        ptrace(PTRACE_SEIZE, tid)
        ptrace(PTRACE_INTERRUPT, tid)
    except OSError as exc:
        if exc.errno == errno.ESRCH:  # the thread ended meanwhile
            return False
        raise
    os.waitpid(tid, WALL)
    return True


def hold(tid: int) -> dict[str, object]:
    """Keep `tid` stopped until it dies with its process; how it ended."""
    while True:
        try:
            _, status = os.waitpid(tid, WALL)
        except ChildProcessError:
            return {"ended": tid, "how": "gone"}
        if os.WIFEXITED(status):
            return {"ended": tid, "how": "exited", "status": os.WEXITSTATUS(status)}
        if os.WIFSIGNALED(status):
            return {"ended": tid, "how": "killed", "signal": os.WTERMSIG(status)}
        # any other stop: left stopped, as a hung thread stays hung


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pid", type=int)
    parser.add_argument("library")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    looks = 0
    while time.monotonic() < deadline:
        try:
            maps = mappings(args.pid)
            tids = sorted(int(t) for t in os.listdir(f"/proc/{args.pid}/task"))
        except FileNotFoundError:
            print(json.dumps({"error": f"process {args.pid} is gone"}), flush=True)
            return 1
        for tid in tids:
            try:
                if not stop_one(args.pid, tid):
                    continue
            except OSError as exc:  # EPERM: no CAP_SYS_PTRACE, or Yama forbids it
                print(json.dumps({"error": str(exc)}), flush=True)
                return 1
            looks += 1
            pc, path = where(args.pid, tid, maps)
            if args.library in os.path.basename(path):
                print(json.dumps({"stopped": tid, "pid": args.pid, "pc": hex(pc or 0),
                                  "in": path, "looks": looks}), flush=True)
                print(json.dumps(hold(tid)), flush=True)
                return 0
            ptrace(PTRACE_DETACH, tid)
        time.sleep(0.01)  # let the threads run a little before the next look
    print(json.dumps({"error": f"no thread of {args.pid} seen inside {args.library} in "
                      f"{looks} looks over {args.timeout:g} s"}), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
