"""Render a parent report's text from its stored payload, in French or English.

Rendering reads only the payload, so a report can be shown again in another language or
after a template change without touching the source tables. French figures use a decimal
comma ("14,5/20") and dates read "31 janvier 2025".
"""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from dashboard_jobs.domain.periods import parse_period

# Bump when the payload layout or the wording changes, so stored reports of each layout can be found.
TEMPLATE_VERSION = 1

SUPPORTED_LOCALES = ("fr", "en")

MONTHS = {
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
           "septembre", "octobre", "novembre", "décembre"),
    "en": ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"),
}

# Display names of the subject ids stored in tasks and evaluations; other ids show as stored.
SUBJECT_NAMES = {
    "fr": {
        "francais": "Français",
        "mathematiques": "Mathématiques",
        "histoire-geographie": "Histoire-géographie",
        "anglais": "Anglais",
        "physique-chimie": "Physique-chimie",
        "svt": "SVT",
    },
    "en": {
        "francais": "French",
        "mathematiques": "Mathematics",
        "histoire-geographie": "History and geography",
        "anglais": "English",
        "physique-chimie": "Physics and chemistry",
        "svt": "Life and earth sciences",
    },
}

# A change of average smaller than this many points out of 20 reads as stable.
STABLE_CHANGE = 0.5


def report_language(locale: str | None) -> str:
    """Return "en" for an English locale (en, en-GB, en_US.UTF-8) and "fr" for anything else."""
    return "en" if locale and locale.lower().startswith("en") else "fr"


def format_number(value: float, language: str, digits: int = 1) -> str:
    """Format ``value`` with ``digits`` decimals, half up, with a decimal comma in French."""
    quantum = Decimal(1).scaleb(-digits)
    text = str(Decimal(str(value)).quantize(quantum, rounding=ROUND_HALF_UP))
    return text.replace(".", ",") if language == "fr" else text


def format_change(value: float, language: str) -> str:
    sign = "+" if value >= 0 else "-"
    return sign + format_number(abs(value), language)


def format_score(value: float, language: str) -> str:
    return f"{format_number(value, language)}/20"


def format_percent(rate: float, language: str) -> str:
    percent = format_number(rate * 100, language, digits=0)
    return f"{percent} %" if language == "fr" else f"{percent}%"


def format_date(day: date, language: str) -> str:
    """Return "1er mars 2025" or "31 janvier 2025" in French, "31 January 2025" in English."""
    month = MONTHS[language][day.month - 1]
    if language == "fr" and day.day == 1:
        return f"1er {month} {day.year}"
    return f"{day.day} {month} {day.year}"


def subject_name(subject: str, language: str) -> str:
    return SUBJECT_NAMES[language].get(subject, subject)


def format_month(period: str, language: str) -> str:
    parsed = parse_period(period)
    return f"{MONTHS[language][parsed.month - 1]} {parsed.year}"


def plural(count: int, singular: str, plural_form: str, language: str) -> str:
    # French uses the singular for 0 and 1, English only for 1.
    one = count <= 1 if language == "fr" else count == 1
    return f"{count} {singular if one else plural_form}"


def render_summary_md(payload: dict[str, Any], locale: str) -> str:
    """Return the parent-facing Markdown summary of a report payload."""
    language = report_language(locale)
    kpis = payload["kpis"]
    lines = [_title(payload, language), ""]
    if payload["window"]["month_to_date"]:
        lines += [_month_to_date_notice(payload, language), ""]

    if not kpis["has_activity"]:
        lines.append(_no_activity(language))
        return "\n".join(lines) + "\n"

    previous_month = format_month(str(parse_period(payload["period"]).previous()), language)
    lines += _progress_section(kpis["progress"], previous_month, language)
    lines += _tasks_section(kpis["tasks"], language)
    lines += _sessions_section(kpis["sessions"], language)
    return "\n".join(lines).rstrip() + "\n"


def _title(payload: dict[str, Any], language: str) -> str:
    name = payload["student"]["first_name"]
    month = format_month(payload["period"], language)
    if language == "en":
        return f"# Monthly report for {name}, {month}"
    return f"# Rapport mensuel {_de(name)}, {month}"


def _de(name: str) -> str:
    """Return "de Léa", or "d'Anna" before a vowel or an h, as French elision requires."""
    return f"d'{name}" if name[:1].lower() in "aeiouyhàâäéèêëîïôöùûü" else f"de {name}"


def _month_to_date_notice(payload: dict[str, Any], language: str) -> str:
    stop = format_date(date.fromisoformat(payload["window"]["stop_date"]), language)
    if language == "en":
        return f"_The month is still running: this report stops at {stop}._"
    return f"_Le mois est en cours : ce rapport s'arrête au {stop}._"


def _no_activity(language: str) -> str:
    if language == "en":
        return "No activity was recorded this month: no evaluation, no task and no tutoring session."
    return "Aucune activité enregistrée ce mois-ci : ni évaluation, ni tâche, ni séance de soutien."


def _progress_section(progress: dict[str, Any], previous_month: str, language: str) -> list[str]:
    en = language == "en"
    lines = ["## Progress" if en else "## Progression", ""]
    if progress["average"] is None:
        lines += ["No evaluation this month." if en else "Pas d'évaluation ce mois-ci.", ""]
        return lines

    noun = ("evaluation", "evaluations") if en else ("évaluation", "évaluations")
    count = plural(progress["evaluations"], *noun, language)
    label = "Average:" if en else "Moyenne :"
    overall = f"- {label} {format_score(progress['average'], language)} ({count})"
    if progress["previous_average"] is not None:
        overall += _comparison(progress, previous_month, language)
    lines.append(overall)
    for subject in progress["subjects"]:
        if subject["average"] is not None:
            lines.append(_subject_line(subject, language))
    lines += ["", _progress_comment(progress["change"], language), ""]
    return lines


def _comparison(figures: dict[str, Any], previous_month: str, language: str) -> str:
    previous = format_score(figures["previous_average"], language)
    change = format_change(figures["change"], language)
    if language == "en":
        return f", {change} points compared with {previous_month} ({previous})"
    # French keeps "point" singular below 2, so "0,5 point" but "2,5 points".
    unit = "point" if abs(figures["change"]) < 2 else "points"
    return f", {change} {unit} par rapport à {previous_month} ({previous})"


def _subject_line(subject: dict[str, Any], language: str) -> str:
    score = format_score(subject["average"], language)
    noun = ("evaluation", "evaluations") if language == "en" else ("évaluation", "évaluations")
    details = [plural(subject["evaluations"], *noun, language)]
    if subject["change"] is not None:
        details.append(format_change(subject["change"], language))
    separator = ":" if language == "en" else " :"
    return f"- {subject_name(subject['subject'], language)}{separator} {score} ({', '.join(details)})"


def _progress_comment(change: float | None, language: str) -> str:
    en = language == "en"
    if change is None:
        return "No average last month to compare with." if en else "Pas de moyenne le mois précédent pour comparer."
    if change >= STABLE_CHANGE:
        return "Results are improving." if en else "Les résultats progressent."
    if change <= -STABLE_CHANGE:
        return "Results are down; a word with the coach can help." if en else (
            "Les résultats baissent ; un échange avec le coach peut aider."
        )
    return "Results are stable." if en else "Les résultats sont stables."


def _tasks_section(tasks: dict[str, Any], language: str) -> list[str]:
    en = language == "en"
    lines = ["## Tasks" if en else "## Tâches", ""]
    if tasks["assigned"] == 0:
        lines += ["No task was due this month." if en else "Aucune tâche n'était à rendre ce mois-ci.", ""]
        return lines

    if en:
        lines.append(
            f"- {plural(tasks['assigned'], 'task', 'tasks', language)} due, {tasks['completed']} completed, "
            f"{tasks['overdue']} overdue"
        )
    else:
        lines.append(
            f"- {plural(tasks['assigned'], 'tâche', 'tâches', language)} à rendre, "
            f"{plural(tasks['completed'], 'terminée', 'terminées', language)}, "
            f"{tasks['overdue']} en retard"
        )
    if tasks["on_time_rate"] is not None:
        rate = format_percent(tasks["on_time_rate"], language)
        lines.append(f"- {'Handed in on time' if en else 'Rendues à temps'}{':' if en else ' :'} {rate}")
    lines += ["", _tasks_comment(tasks, language), ""]
    return lines


def _tasks_comment(tasks: dict[str, Any], language: str) -> str:
    en = language == "en"
    overdue = tasks["overdue"]
    if overdue:
        if en:
            return f"{plural(overdue, 'overdue task needs', 'overdue tasks need', language)} catching up."
        return f"{plural(overdue, 'tâche en retard', 'tâches en retard', language)} à rattraper."
    if tasks["on_time_rate"] is None:
        return "No task has reached its due date yet." if en else "Aucune tâche n'est encore arrivée à échéance."
    return "Every task due has been handed in." if en else "Toutes les tâches échues ont été rendues."


def _sessions_section(sessions: dict[str, Any], language: str) -> list[str]:
    en = language == "en"
    lines = ["## Tutoring sessions" if en else "## Séances de soutien", ""]
    total = sessions["planned"] + sessions["done"] + sessions["cancelled"] + sessions["no_show"]
    if total == 0:
        lines += ["No tutoring session this month." if en else "Aucune séance de soutien ce mois-ci.", ""]
        return lines

    if en:
        lines.append(
            f"- {sessions['done']} done ({sessions['minutes']} min), {sessions['planned']} planned, "
            f"{sessions['cancelled']} cancelled, {sessions['no_show']} missed"
        )
    else:
        lines.append(
            f"- {plural(sessions['done'], 'séance effectuée', 'séances effectuées', language)} "
            f"({sessions['minutes']} min), "
            f"{plural(sessions['planned'], 'prévue', 'prévues', language)}, "
            f"{plural(sessions['cancelled'], 'annulée', 'annulées', language)}, "
            f"{plural(sessions['no_show'], 'absence', 'absences', language)}"
        )
    lines += ["", _sessions_comment(sessions, language), ""]
    return lines


def _sessions_comment(sessions: dict[str, Any], language: str) -> str:
    en = language == "en"
    if sessions["no_show"]:
        if en:
            return f"{plural(sessions['no_show'], 'session was', 'sessions were', language)} missed without notice."
        return f"{plural(sessions['no_show'], 'séance manquée', 'séances manquées', language)} sans prévenir."
    if sessions["done"] == 0:
        return "No session has taken place yet." if en else "Aucune séance n'a encore eu lieu."
    return "Sessions took place as planned." if en else "Les séances ont eu lieu comme prévu."
