"""Every catalog of words (commands.i18n): each text in every language, with the same placeholders,
so that no Japanese reader gets English by omission and no `format` fails on one language only."""

from __future__ import annotations

import importlib
import pkgutil
import string

import pytest

import commands
from commands.i18n import CATALOGS, LANGUAGES, Catalog, language_of

for module in pkgutil.iter_modules(commands.__path__):
    importlib.import_module(f"commands.{module.name}")  # each registers its catalog on import


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _entries() -> list[tuple[str, str]]:
    return [(name, key) for name, catalog in sorted(CATALOGS.items()) for key in catalog.texts]


def test_the_surfaces_people_read_have_catalogs() -> None:
    expected = {"cards", "notices", "approval_blocks", "approvals", "card_memory", "incident_command", "slash",
                "home", "roles", "role_blocks", "runbook_blocks", "runbook_flow", "silence_command", "silences",
                "postmortem", "postmortem_doc", "storm_blocks", "storm_split"}
    assert expected <= set(CATALOGS), f"no catalog registered for {sorted(expected - set(CATALOGS))}"


@pytest.mark.parametrize(("catalog", "key"), _entries())
def test_each_text_in_every_language_with_the_same_placeholders(catalog: str, key: str) -> None:
    texts = CATALOGS[catalog].texts[key]
    assert set(texts) == set(LANGUAGES), f"{catalog}.{key}: languages {sorted(texts)}"
    english = _fields(texts["en"])
    for language, text in texts.items():
        assert text.strip(), f"{catalog}.{key}.{language} is empty"
        assert _fields(text) == english, f"{catalog}.{key}.{language}: {_fields(text)} vs en {english}"


def test_a_locale_picks_its_language_and_anything_else_english() -> None:
    assert [language_of(x) for x in ("ja-JP", "ja_JP", "JA", "en-US", "ko-KR", "", None)] == \
        ["ja", "ja", "ja", "en", "en", "en", "en"]
    words = Catalog("test_words", {"hello": {"en": "hello {name}", "ja": "こんにちは {name}"}})
    assert words("hello", "ja-JP", name="A") == "こんにちは A"
    assert words("hello", "fr-FR", name="A") == "hello A"


def test_a_catalog_without_english_is_refused_at_import() -> None:
    with pytest.raises(ValueError, match="no English text for greeting"):
        Catalog("broken", {"greeting": {"ja": "こんにちは"}})
