"""The console's languages: one ICU MessageFormat catalogue (JSON) per language in static/i18n/."""

from __future__ import annotations

from pathlib import Path

CATALOGUES = Path(__file__).parent / "static" / "i18n"
# English first: the catalogue every other is checked against.
LANGUAGES = ("en", "lt", "lv", "pl", "bg", "tr")


def check_language(language: str) -> str:
    """`language` if the console has a catalogue of it ("" for the browser's choice)."""
    if language != "" and language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}")
    return language


def catalogue_path(language: str) -> Path:
    return CATALOGUES / f"{check_language(language) or 'en'}.json"
