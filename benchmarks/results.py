"""A run's record: machine and versions, its figures as JSON and Markdown; comparing two."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.datasets import REPO_ROOT
from edge.core.times import iso, utc_now

SCHEMA = 1


# --------------------------------------------------------------------------- environment


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "unknown"))


def _git() -> dict[str, Any]:
    def run(*cmd: str) -> str | None:
        try:
            out = subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def environment() -> dict[str, Any]:
    """Where and with what a run ran: enough to tell whether two results can be compared."""
    from edge.node.models import ModelError, load_manifest

    try:
        models: dict[str, str] | str = load_manifest().versions()
    except ModelError as exc:
        models = f"unavailable: {exc}"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "threads_env": os.environ.get("ANPR_THREADS"),
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "opencv": _version("cv2"),
        "numpy": np.__version__,
        "models": models,
        "git": _git(),
    }


# --------------------------------------------------------------------------- statistics


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """Median, 95th percentile and maximum (None when there are no values)."""
    if not len(values):
        return {"n": 0, "median": None, "p95": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"n": int(arr.size), "median": round(float(np.median(arr)), 3),
            "p95": round(float(np.percentile(arr, 95)), 3), "max": round(float(arr.max()), 3)}


def median_of(runs: Sequence[Any]) -> Any:
    """Element-wise median of repeated runs' figures (nested dicts of numbers).

    Numbers become the median over the runs; anything else (text, lists) is taken from
    the first run. A key missing from some runs takes the median of those that have it.
    """
    first = runs[0]
    if isinstance(first, Mapping):
        keys = list(dict.fromkeys(k for run in runs if isinstance(run, Mapping) for k in run))
        return {k: median_of([run[k] for run in runs if isinstance(run, Mapping) and k in run])
                for k in keys}
    numbers = [r for r in runs if _is_number(r)]
    if _is_number(first) and numbers:
        value = float(np.median(numbers))
        return int(value) if all(isinstance(r, int) for r in numbers) and value.is_integer() \
            else round(value, 4)
    return first


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(float(value))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are left out (they are details, not figures)."""
    out: dict[str, Any] = {}
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif not isinstance(tree, list | tuple):
        out[prefix.rstrip(".")] = tree
    return out


# --------------------------------------------------------------------------- a run's output


def output_dir(out: str | Path | None, suite: str) -> Path:
    if out:
        path = Path(out)
    else:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("bench-results") / f"{suite}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = Path("bench-results") / f"{suite}-{stamp}-{n}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start(suite: str, argv: Sequence[str], *, seed: int | None, repeat: int | None,
          config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The header every result carries; the suite adds `figures`, `targets` and `details`."""
    return {
        "schema": SCHEMA,
        "suite": suite,
        "command": " ".join(["python -m benchmarks", *argv]),
        "started": iso(utc_now(), "seconds", z=False),
        "seed": seed,
        "repeat": repeat,
        "environment": environment(),
        "load_average": {"start": loadavg()},
        "config": dict(config) if config is not None else None,
        "_t0": time.perf_counter(),
    }


def finish(result: dict[str, Any], out_dir: Path, markdown: str) -> Path:
    """Write result.json and summary.md into `out_dir`; return the JSON's path."""
    result["duration_s"] = round(time.perf_counter() - result.pop("_t0"), 1)
    result["load_average"]["end"] = loadavg()
    path = out_dir / "result.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False, default=_jsonable) + "\n")
    header = header_markdown(result)
    (out_dir / "summary.md").write_text(header + "\n" + markdown.rstrip() + "\n")
    return path


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def header_markdown(result: Mapping[str, Any]) -> str:
    env = result["environment"]
    models = env["models"]
    model_text = (", ".join(f"{k} {v}" for k, v in models.items())
                  if isinstance(models, Mapping) else str(models))
    git = env.get("git") or {}
    load = result.get("load_average", {})
    lines = [
        f"# Benchmark: {result['suite']}",
        "",
        f"- command: `{result['command']}`",
        f"- started {result['started']}, took {result.get('duration_s', '?')} s",
        f"- machine: {env['cpu_model']}, {env['cores']} cores ({env['cores_usable']} usable), "
        f"{env['platform']}",
        f"- load average (1, 5, 15 min) at start {load.get('start')}, at end "
        f"{load.get('end')}: speed figures taken while other jobs ran are slower",
        f"- Python {env['python']}, onnxruntime {env['onnxruntime']}, OpenCV {env['opencv']}, "
        f"numpy {env['numpy']}",
        f"- models (sha256 prefix): {model_text}",
        f"- code: {git.get('commit') or 'unknown'}"
        f"{' with uncommitted changes' if git.get('dirty') else ''}",
        f"- seed {result.get('seed')}, repeat {result.get('repeat')}",
    ]
    return "\n".join(lines) + "\n"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def target(figure: str, value: float | None, goal: float, *, above: bool = True,
           what: str = "") -> dict[str, Any]:
    """One target to report against: met, not met, or not measured (value None)."""
    met = None if value is None else (value >= goal if above else value <= goal)
    return {"figure": figure, "what": what, "value": value,
            "target": f"{'>=' if above else '<='} {goal}", "met": met}


def targets_markdown(targets: Sequence[Mapping[str, Any]]) -> str:
    if not targets:
        return ""
    rows = [(t["what"] or t["figure"], t["value"], t["target"],
             "not measured" if t["met"] is None else ("met" if t["met"] else "NOT MET"))
            for t in targets]
    return "## Targets\n\n" + md_table(["figure", "value", "target", ""], rows)


# --------------------------------------------------------------------------- compare


def load(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or "figures" not in data:
        raise ValueError(f"{path} is not a benchmark result (no 'figures')")
    return data


def compare(a: Mapping[str, Any], b: Mapping[str, Any], *,
            match: str | None = None) -> list[tuple[str, Any, Any, float | None]]:
    """(figure, A, B, B / A) for every number in either result's figures."""
    fa, fb = flatten(a["figures"]), flatten(b["figures"])
    rows = []
    for key in list(dict.fromkeys([*fa, *fb])):
        if match and not re.search(match, key):
            continue
        va, vb = fa.get(key), fb.get(key)
        if not (_is_number(va) or _is_number(vb)):
            continue
        ratio: float | None = None
        if _is_number(va) and _is_number(vb):
            if va == vb:
                ratio = 1.0
            elif va != 0:
                ratio = float(vb) / float(va)
            else:
                ratio = math.inf
        rows.append((key, va, vb, ratio))
    return rows


def environment_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What differs between the two runs' machines, versions, models and settings."""
    out = []
    ea, eb = flatten(a.get("environment", {})), flatten(b.get("environment", {}))
    for key in dict.fromkeys([*ea, *eb]):
        if key in ("host",):
            continue
        if ea.get(key) != eb.get(key):
            out.append(f"{key}: {ea.get(key)} -> {eb.get(key)}")
    if a.get("config") != b.get("config"):
        ca, cb = flatten(a.get("config") or {}), flatten(b.get("config") or {})
        out += [f"config.{k}: {ca.get(k)} -> {cb.get(k)}" for k in dict.fromkeys([*ca, *cb])
                if ca.get(k) != cb.get(k)]
    for key in ("suite", "seed", "repeat"):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)} -> {b.get(key)}")
    la, lb = a.get("load_average", {}), b.get("load_average", {})
    out.append(f"load average at start: {la.get('start')} -> {lb.get('start')}")
    return out


def print_comparison(pa: str, pb: str, *, match: str | None = None, out: Any = None) -> int:
    out = out or sys.stdout
    a, b = load(pa), load(pb)
    rows = compare(a, b, match=match)
    print(f"A = {pa}\nB = {pb}", file=out)
    for line in environment_differences(a, b):
        print(f"  {line}", file=out)
    width = max([len(r[0]) for r in rows] + [6])
    print(f"{'figure':<{width}}  {'A':>12}  {'B':>12}  {'B/A':>8}", file=out)
    for key, va, vb, ratio in rows:
        shown = "-" if ratio is None else ("inf" if math.isinf(ratio) else f"{ratio:.3f}")
        print(f"{key:<{width}}  {_short(va):>12}  {_short(vb):>12}  {shown:>8}", file=out)
    return 0


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
