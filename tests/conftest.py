"""Shared test set-up: where the real data and the prepared models are (skips without them),
and the fixtures several test files use (a ZeroMQ context, keys, a collector with its console,
a browser).  What they are built from lives in tests/helpers/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from helpers.browser import browser  # noqa: F401  (a fixture: skips without chromium)
from helpers.console import Stack, running_stack
from helpers.link import Keys, make_keys

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def data_dir(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (it lives beside the repo, in ../shared/data)")
    return path


@pytest.fixture(scope="session")
def engines():
    """The real models, loaded once for the whole test session."""
    from edge.node.models import ModelError
    from edge.node.pipeline import Engines

    try:
        return Engines(vehicles=True)
    except ModelError as exc:
        pytest.skip(f"models not prepared ({exc}); run: make models")


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    """One ZeroMQ context for a test; whatever the test left open is closed with it."""
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """A collector key pair and an allow-list, in the test's own folder."""
    return make_keys(tmp_path)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A collector with its console and watchlist server on loopback, two users in it."""
    yield from running_stack(tmp_path)
