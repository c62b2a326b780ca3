"""The collège subjects that tasks and evaluations may name."""

from __future__ import annotations

# Stored as-is in tasks.subject and evaluations.subject, so these ids are part of the data
# model: renaming one needs a migration of the existing rows.
SUBJECTS: tuple[str, ...] = (
    "francais",
    "mathematiques",
    "histoire-geographie",
    "anglais",
    "physique-chimie",
    "svt",
)


def is_known_subject(value: str) -> bool:
    return value in SUBJECTS
