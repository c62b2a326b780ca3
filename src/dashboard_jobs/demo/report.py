"""The demo's closing report, in French by default and in English on request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoReport:
    students: int
    load_seconds: float
    rebuild_seconds: float
    writes_attempted: int
    writes_succeeded: int
    writes_failed: int
    writes_scheduled: int
    writes_not_sent: int
    writes_late: int
    workload_seconds: float
    events_published: int
    requests: int
    summaries_refreshed: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    dead_letters: int
    outbox_backlog: int
    stale_summaries: int
    mismatched_summaries: int
    checked_summaries: int

    @property
    def recomputations_per_request(self) -> float:
        return self.summaries_refreshed / self.requests if self.requests else 0.0

    @property
    def ok(self) -> bool:
        return (
            self.dead_letters == 0
            and self.outbox_backlog == 0
            and self.stale_summaries == 0
            and self.mismatched_summaries == 0
            and self.writes_failed == 0
        )


LABELS = {
    "fr": {
        "title": "Démo dashboard-jobs : résultat",
        "school": "École chargée",
        "students": "élèves",
        "load": "chargement {load} s, reconstruction des résumés {rebuild} s",
        "writes": "Écritures des coachs (API)",
        "writes_detail": "{scheduled} prévues, {ok} réussies, {failed} en échec, {not_sent} non envoyées "
        "(API saturée), {late} envoyées en retard, sur {seconds} s",
        "events": "Événements publiés par le relais",
        "requests": "Demandes de rafraîchissement",
        "refreshed": "Résumés recalculés",
        "per_request": "Recalculs par demande",
        "latency": "Latence écriture → résumé à jour",
        "dead_letters": "Messages en dead-letter queue",
        "backlog": "Outbox non publiée",
        "stale": "Résumés en retard sur leur dernière écriture",
        "correct": "Résumés identiques à un recalcul depuis les tables sources",
        "verdict_ok": "OK : rien de perdu, rien en double, chaque résumé est juste.",
        "verdict_fail": "ÉCHEC : voir les lignes ci-dessus et les journaux dans {logs}.",
        "none": "aucune mesure",
    },
    "en": {
        "title": "dashboard-jobs demo: result",
        "school": "School loaded",
        "students": "students",
        "load": "load {load} s, summary rebuild {rebuild} s",
        "writes": "Coach writes (API)",
        "writes_detail": "{scheduled} scheduled, {ok} succeeded, {failed} failed, {not_sent} not sent "
        "(API saturated), {late} sent late, over {seconds} s",
        "events": "Events published by the relay",
        "requests": "Refresh requests",
        "refreshed": "Summaries recomputed",
        "per_request": "Recomputations per request",
        "latency": "Write-to-fresh-summary latency",
        "dead_letters": "Dead-lettered messages",
        "backlog": "Unpublished outbox rows",
        "stale": "Summaries older than their latest write",
        "correct": "Summaries equal to a recomputation from the source tables",
        "verdict_ok": "OK: nothing lost, nothing done twice, every summary correct.",
        "verdict_fail": "FAILED: see the lines above and the logs in {logs}.",
        "none": "no sample",
    },
}


def _number(value: float, lang: str, decimals: int = 0) -> str:
    text = f"{value:,.{decimals}f}"
    if lang == "fr":
        # French typography: narrow no-break space between thousands, decimal comma.
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def render(report: DemoReport, lang: str, log_dir: str) -> str:
    labels = LABELS[lang]
    n = lambda value, decimals=0: _number(value, lang, decimals)  # noqa: E731

    writes_detail = labels["writes_detail"].format(
        scheduled=n(report.writes_scheduled), ok=n(report.writes_succeeded), failed=n(report.writes_failed),
        not_sent=n(report.writes_not_sent), late=n(report.writes_late), seconds=n(report.workload_seconds, 1),
    )
    if report.latency_p50_ms is None:
        latency = labels["none"]
    else:
        latency = (
            f"p50 {n(report.latency_p50_ms)} ms, p95 {n(report.latency_p95_ms)} ms, "
            f"p99 {n(report.latency_p99_ms)} ms"
        )
    rows = [
        (labels["school"], f"{n(report.students)} {labels['students']} ("
         + labels["load"].format(load=n(report.load_seconds, 1), rebuild=n(report.rebuild_seconds, 1)) + ")"),
        (labels["writes"], f"{n(report.writes_attempted)} ({writes_detail})"),
        (labels["events"], n(report.events_published)),
        (labels["requests"], n(report.requests)),
        (labels["refreshed"], n(report.summaries_refreshed)),
        (labels["per_request"], n(report.recomputations_per_request, 2)),
        (labels["latency"], latency),
        (labels["dead_letters"], n(report.dead_letters)),
        (labels["backlog"], n(report.outbox_backlog)),
        (labels["stale"], n(report.stale_summaries)),
        (labels["correct"], f"{n(report.checked_summaries - report.mismatched_summaries)} / {n(report.checked_summaries)}"),
    ]

    width = max(len(label) for label, _ in rows)
    lines = [labels["title"], "=" * len(labels["title"])]
    lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
    verdict = labels["verdict_ok"] if report.ok else labels["verdict_fail"].format(logs=log_dir)
    lines += ["", verdict]
    return "\n".join(lines)
