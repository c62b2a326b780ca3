"""Map an event type and contract version to its model."""

from __future__ import annotations

from dashboard_jobs.contracts.base import Event
from dashboard_jobs.contracts.reports import ParentReportCompletedV1, ParentReportRequestedV1
from dashboard_jobs.contracts.summary import (
    DashboardSummaryRefreshCompletedV1,
    DashboardSummaryRefreshRequestedV1,
)


class UnknownContractError(LookupError):
    """No contract is registered for this event type and version."""


REGISTRY: dict[tuple[str, int], type[Event]] = {}


def register(model: type[Event]) -> type[Event]:
    key = (model.TYPE, model.VERSION)
    if key in REGISTRY:
        raise RuntimeError(f"contract {model.TYPE} v{model.VERSION} is registered twice")
    REGISTRY[key] = model
    return model


def contract_for(event_type: str, version: int) -> type[Event]:
    try:
        return REGISTRY[(event_type, version)]
    except KeyError:
        known = sorted(f"{t} v{v}" for t, v in REGISTRY)
        raise UnknownContractError(
            f"no contract for event type {event_type!r} version {version!r}; known: {', '.join(known)}"
        ) from None


for _model in (
    DashboardSummaryRefreshRequestedV1,
    DashboardSummaryRefreshCompletedV1,
    ParentReportRequestedV1,
    ParentReportCompletedV1,
):
    register(_model)
