"""What a finished worker run writes, decided over plain data (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestration.fleet.runner import closed_run_fields, merged_anomalies, run_message, worker_fields_after

NOW = datetime(2025, 1, 1, 12, tzinfo=UTC)


def test_a_run_closes_with_its_outcome_and_jsonable_metrics():
    fields = closed_run_fields("succeeded", NOW, duration_s=1.23456, metrics={"at": NOW}, error="")
    assert fields["success"] is True and fields["duration_ms"] == 1234.6
    assert fields["metrics"] == {"at": str(NOW)}  # anything JSON cannot hold is written as text
    failed = closed_run_fields("failed", NOW, duration_s=0, metrics={}, error="e" * 6000)
    assert failed["success"] is False and len(failed["error"]) == 5000


def test_an_interrupted_run_neither_succeeded_nor_failed():
    assert closed_run_fields("interrupted", NOW, duration_s=0, metrics={}, error="")["success"] is None


def test_only_a_success_moves_the_workers_last_success():
    assert worker_fields_after("succeeded", NOW) == {
        "last_run_at": NOW,
        "last_status": "succeeded",
        "last_success_at": NOW,
    }
    assert "last_success_at" not in worker_fields_after("failed", NOW)


def test_the_message_names_the_first_line_of_the_error():
    assert run_message("c", "failed", 2.5, 41.6, "boom\ntrace") == "Worker c failed in 2.50 s, score 42: boom"
    assert run_message("c", "succeeded", 0.1, 100, "") == "Worker c succeeded in 0.10 s, score 100"


def test_anomaly_codes_are_merged_once_and_only_when_there_are_some():
    assert merged_anomalies(["SLOW_EXECUTION"], []) is None
    assert merged_anomalies(["SLOW_EXECUTION"], ["TIMEOUT_WARNING", "SLOW_EXECUTION"]) == [
        "SLOW_EXECUTION",
        "TIMEOUT_WARNING",
    ]
