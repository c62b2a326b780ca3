"""Language of what the CLI prints for operators: French unless asked otherwise."""

from __future__ import annotations

import os

import typer

LANGUAGES = ("fr", "en")


def output_language(option: str | None) -> str:
    """Return "fr" or "en" from ``--lang``, else "en" when LANG starts with "en", else "fr".

    Raises typer.BadParameter for any other ``--lang`` value.
    """
    if option is not None:
        if option not in LANGUAGES:
            raise typer.BadParameter(f"{option!r} is not a supported language; use fr or en.", param_hint="--lang")
        return option
    return "en" if os.environ.get("LANG", "").lower().startswith("en") else "fr"
