"""Shared test helpers: where the real data and the prepared models are, and skips without them."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    from edge.node.engines import Engines
    from edge.node.models import ModelError

    try:
        return Engines.load(vehicles=True)
    except ModelError as exc:
        pytest.skip(f"models not prepared ({exc}); run: make models")
