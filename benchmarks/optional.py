"""The benchmark's optional extras (matplotlib, tqdm): imported where used, named when missing."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any, TypeVar

INSTALL = "pip install -e '.[bench]'"

T = TypeVar("T")
_warned: set[str] = set()


def require(module: str, purpose: str) -> ModuleType:
    """Import `module`, or raise an ImportError that says what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{purpose} needs {module.split('.')[0]}, which is not installed; "
                          f"install the benchmark extra: {INSTALL}") from exc


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"benchmarks: {message}", file=sys.stderr)


class _NoBar:
    """What a progress bar offers, doing nothing (tqdm absent or bars switched off)."""

    def __init__(self, iterable: Iterable[Any] | None = None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable or ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True) -> Any:
    """A tqdm bar on stderr (shown on a terminal only), or a silent stand-in."""
    if not enabled:
        return _NoBar(iterable)
    try:
        from tqdm import tqdm
    except ImportError:
        warn_once(f"no progress bars: tqdm is not installed ({INSTALL})")
        return _NoBar(iterable)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                disable=None, dynamic_ncols=True)
