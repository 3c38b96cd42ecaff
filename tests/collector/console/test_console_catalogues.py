"""The console's catalogues: every language has every key the page uses and no other, each
message parses as ICU MessageFormat with the same arguments as English, and each plural has
the categories the language's CLDR plural rules select."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from edge.collector.console.i18n import CATALOGUES, LANGUAGES

STATIC = CATALOGUES.parent
# CLDR's cardinal plural categories (what Intl.PluralRules(lang).select can answer).
PLURALS = {"en": {"one", "other"}, "lt": {"one", "few", "many", "other"},
           "lv": {"zero", "one", "other"}, "pl": {"one", "few", "many", "other"},
           "bg": {"one", "other"}, "tr": {"one", "other"}}  # fmt: skip
KEY = re.compile(r"^[a-z]+\.[a-z0-9_]+$")


def catalogue(lang: str) -> dict[str, str]:
    data = json.loads((CATALOGUES / f"{lang}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict) and all(isinstance(v, str) for v in data.values()), lang
    return data


def parse(src: str) -> list[Any]:
    """The ICU subset i18n.js formats: {a}, {a, number}, {a, plural|select, k {..} ...}."""
    pos = 0

    def word() -> str:
        nonlocal pos
        m = re.compile(r"\s*([^\s,{}]+)\s*").match(src, pos)
        assert m, f"a name expected at {pos} in {src!r}"
        pos = m.end()
        return m.group(1)

    def expect(c: str) -> None:
        nonlocal pos
        while pos < len(src) and src[pos].isspace():
            pos += 1
        assert src[pos : pos + 1] == c, f"{c!r} expected at {pos} in {src!r}"
        pos += 1

    def text() -> list[Any]:
        nonlocal pos
        parts: list[Any] = []
        while pos < len(src) and src[pos] != "}":
            if src[pos] == "{":
                pos += 1
                parts.append(arg())
            else:
                pos += 1
        return parts

    def arg() -> tuple[str, str, dict[str, list[Any]]]:
        nonlocal pos
        name = word()
        if src[pos] == "}":
            pos += 1
            return (name, "", {})
        expect(",")
        kind = word()
        if src[pos] == "}":
            pos += 1
            return (name, kind, {})
        expect(",")
        assert kind in ("plural", "select"), f"{kind} in {src!r}"
        options: dict[str, list[Any]] = {}
        while True:
            while pos < len(src) and src[pos].isspace():
                pos += 1
            assert pos < len(src), f"unclosed argument in {src!r}"
            if src[pos] == "}":
                pos += 1
                return (name, kind, options)
            selector = word()
            expect("{")
            options[selector] = text()
            expect("}")

    out = text()
    assert pos == len(src), f"unmatched '}}' in {src!r}"
    return out


def arguments(parts: list[Any]) -> set[tuple[str, str]]:
    found = set()
    for name, kind, options in parts:
        found.add((name, kind))
        for branch in options.values():
            found |= arguments(branch)
    return found


def plurals(parts: list[Any]) -> list[set[str]]:
    found = []
    for _, kind, options in parts:
        if kind == "plural":
            found.append({k for k in options if not k.startswith("=")})
        for branch in options.values():
            found += plurals(branch)
    return found


def used_keys() -> set[str]:
    """The keys the page and its scripts name: data-i18n* attributes, and string literals
    shaped like a key of a catalogue's namespace in the scripts (t("hit.seen"), and maps of
    keys such as HEALTH; not CSS selectors such as "section.tab")."""
    spaces = {k.split(".")[0] for k in catalogue("en")}
    used: set[str] = set()
    for page in ("index.html", "login.html"):
        html = (STATIC / page).read_text(encoding="utf-8")
        used |= set(re.findall(r'data-i18n(?:-[a-z]+)?="([^"]+)"', html))
    for script in ("app.js", "login.js"):
        js = (STATIC / script).read_text(encoding="utf-8")
        used |= {s for s in re.findall(r'"([^"\s]+)"', js)
                 if KEY.match(s) and s.split(".")[0] in spaces}
    return used


def test_every_key_the_page_uses_is_in_english_and_none_is_unused():
    english = set(catalogue("en"))
    used = used_keys()
    assert sorted(used - english) == [], "used by the page, missing from en.json"
    assert sorted(english - used) == [], "in en.json, used nowhere"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_language_has_every_key_with_its_arguments_and_plurals(lang):
    english, words = catalogue("en"), catalogue(lang)
    assert sorted(set(english) - set(words)) == [], f"missing from {lang}.json"
    assert sorted(set(words) - set(english)) == [], f"not in en.json, only in {lang}.json"
    for key, text in words.items():
        parts = parse(text)
        assert arguments(parts) == arguments(parse(english[key])), (lang, key)
        for categories in plurals(parts):
            assert categories == PLURALS[lang], (lang, key, categories)
        assert text.strip(), (lang, key)
    if lang != "en":  # translated, not copied: most messages differ from English
        same = [k for k in english if words[k] == english[k]]
        assert len(same) < len(english) // 10, (lang, same)


def test_the_parser_refuses_what_i18n_js_refuses():
    for bad in ("{count, plural, one {#}", "unmatched }", "{a, bogus, x {y}}"):
        with pytest.raises(AssertionError):
            parse(bad)
    assert arguments(parse("{n, plural, one {# of {x}} other {#}}")) == {("n", "plural"),
                                                                        ("x", "")}


def test_catalogues_are_where_the_page_loads_them():
    assert {p.stem for p in Path(CATALOGUES).glob("*.json")} == set(LANGUAGES)
