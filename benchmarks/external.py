"""The watchlist and link benchmarks, run from here: their own modules, as subprocesses.

Each prints one JSON object on its last line of output; that object becomes this run's
`figures`, with the usual header (machine, versions, load) around it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks import results
from benchmarks.datasets import REPO_ROOT


class ExternalError(ValueError):
    """The benchmark module is missing, failed, or did not end with a JSON line."""


def run_module(module: str, args: Sequence[str], *, timeout: float = 1800.0,
               env: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """Run `python -m module args...` from the repo root; its last-line JSON and its stderr."""
    path = REPO_ROOT.joinpath(*module.split(".")).with_suffix(".py")
    if module.startswith("benchmarks.") and not path.is_file():
        raise ExternalError(f"{module} is not there ({path} is absent)")
    cmd = [sys.executable, "-m", module, *args]
    try:
        done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        raise ExternalError(f"{' '.join(cmd[2:])} ran past {timeout:g} s") from None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-1500:]
        raise ExternalError(f"{' '.join(cmd[2:])} exited with {done.returncode}: {tail}")
    try:
        data = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise ExternalError(f"{' '.join(cmd[2:])} did not end with a JSON object line "
                            f"(last line: {lines[-1][:200] if lines else '(no output)'!r})")
    return data, done.stderr


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    extra = list(args.args)
    figures, stderr = run_module(args.module, extra, timeout=args.timeout)
    out_dir = results.output_dir(args.out, args.suite)
    result = results.start(args.suite, argv, seed=None, repeat=None, config=None)
    result["module"] = {"name": args.module, "args": extra}
    result["figures"] = figures
    result["targets"] = []
    (out_dir / "stderr.log").write_text(stderr)
    rows = [(k, v) for k, v in results.flatten(figures).items()]
    md = (f"`python -m {args.module} {' '.join(extra)}`; its last-line JSON, flattened "
          "(its own stderr is in stderr.log):\n\n" + results.md_table(["figure", "value"], rows))
    result["output"] = str(results.finish(result, out_dir, md))
    return result
