"""The words people read, in English and Japanese: one catalog per Slack surface, one way to pick.

A command's answer is in the asker's Slack locale (`commands.slash.asker_language`); the card and
channel messages in the configured one (`runbooks.locale`). Either way the locale ("ja-JP",
"en-US", None) comes here and falls back to English. Each module keeps its words beside the
blocks that use them, as a `Catalog`; every catalog is registered, so that one test checks them all
(tests/test_i18n.py): each key has every language, with the same `{placeholders}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CATALOGS", "LANGUAGES", "Catalog", "language_of"]

LANGUAGES = ("en", "ja")
CATALOGS: dict[str, Catalog] = {}


def language_of(locale: str | None) -> str:
    """The language of a Slack locale ("ja-JP" → "ja"); English for any other."""
    language = (locale or "en").replace("_", "-").split("-")[0].lower()
    return language if language in LANGUAGES else "en"


class Catalog:
    """A module's words: `key → {language → text}`, `str.format` placeholders for values.

    `catalog("key", locale, name=...)` is the text in the locale's language. Values are inserted as
    given: escaping them for mrkdwn is the caller's job, since only it knows where the text goes."""

    def __init__(self, name: str, texts: Mapping[str, Mapping[str, str]]) -> None:
        missing = sorted(key for key, by_language in texts.items() if "en" not in by_language)
        if missing:
            raise ValueError(f"catalog {name}: no English text for {', '.join(missing)} (English is the fallback)")
        self.name = name
        self.texts = {key: dict(by_language) for key, by_language in texts.items()}
        CATALOGS[name] = self

    def __call__(self, key: str, locale: str | None, **values: Any) -> str:
        by_language = self.texts[key]
        text = by_language.get(language_of(locale), by_language["en"])
        return text.format(**values) if values else text

    def __contains__(self, key: object) -> bool:
        return key in self.texts
