"""Checked-in examples of every contract must stay valid: a breaking change fails here."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from dashboard_jobs.contracts import DashboardSummaryRefreshRequestedV1, contract_for
from dashboard_jobs.contracts.registry import REGISTRY, UnknownContractError

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "dashboard_jobs" / "contracts" / "examples"


def example_path(event_type: str, version: int) -> Path:
    return EXAMPLES / f"{event_type}.v{version}.json"


@pytest.mark.parametrize(("event_type", "version"), sorted(REGISTRY))
def test_example_validates_and_round_trips(event_type, version):
    path = example_path(event_type, version)
    assert path.exists(), f"missing example {path.name} for {event_type} v{version}"
    example = json.loads(path.read_text())

    model = contract_for(event_type, version).model_validate(example)

    assert model.model_dump(mode="json", exclude_unset=True) == example


def test_every_example_has_a_contract():
    for path in EXAMPLES.glob("*.json"):
        event_type, version = path.name.removesuffix(".json").rsplit(".v", 1)
        contract_for(event_type, int(version))


def test_unknown_version_is_rejected():
    with pytest.raises(UnknownContractError, match="version 2"):
        contract_for(DashboardSummaryRefreshRequestedV1.TYPE, 2)


@pytest.mark.parametrize(
    "student_ids",
    [[], [uuid.UUID(int=1)] * 2, [uuid.UUID(int=i + 1) for i in range(1001)]],
    ids=["empty", "duplicates", "more than 1000"],
)
def test_refresh_request_student_ids_limits(student_ids):
    with pytest.raises(ValidationError):
        DashboardSummaryRefreshRequestedV1(student_ids=student_ids, reason="x", requested_at=datetime.now(UTC))


def test_refresh_request_rejects_naive_datetime_and_extra_fields():
    with pytest.raises(ValidationError):
        DashboardSummaryRefreshRequestedV1(student_ids=[uuid.uuid4()], reason="x", requested_at=datetime(2025, 1, 1))
    with pytest.raises(ValidationError):
        DashboardSummaryRefreshRequestedV1.model_validate(
            {"student_ids": [str(uuid.uuid4())], "reason": "x", "requested_at": "2025-01-01T00:00:00Z", "extra": 1}
        )
