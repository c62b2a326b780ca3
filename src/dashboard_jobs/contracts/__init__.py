"""Versioned message contracts: the envelope, every event body and the registry."""

from dashboard_jobs.contracts.base import Envelope, Event
from dashboard_jobs.contracts.registry import UnknownContractError, contract_for
from dashboard_jobs.contracts.reports import (
    ParentReportCompletedV1,
    ParentReportRequestedV1,
    RequestedByAccount,
    RequestedByCommand,
    RequestedBySchedule,
)
from dashboard_jobs.contracts.summary import (
    MAX_STUDENTS_PER_REQUEST,
    DashboardSummaryRefreshCompletedV1,
    DashboardSummaryRefreshRequestedV1,
)

__all__ = [
    "MAX_STUDENTS_PER_REQUEST",
    "DashboardSummaryRefreshCompletedV1",
    "DashboardSummaryRefreshRequestedV1",
    "Envelope",
    "Event",
    "ParentReportCompletedV1",
    "ParentReportRequestedV1",
    "RequestedByAccount",
    "RequestedByCommand",
    "RequestedBySchedule",
    "UnknownContractError",
    "contract_for",
]
