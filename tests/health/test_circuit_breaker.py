"""The persisted breaker: atomic transitions, ledger entries, races, restarts."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from health.models import CircuitBreaker
from orchestration.core.models import LedgerEntry

pytestmark = pytest.mark.django_db


def events(name: str) -> list[str]:
    return list(LedgerEntry.objects.filter(subject=name).order_by("id").values_list("event_type", flat=True))


def test_it_gets_or_creates_by_name_with_defaults():
    a = CircuitBreaker.for_name("service:a", failure_threshold=2)
    b = CircuitBreaker.for_name("service:a", failure_threshold=9)
    assert a.pk == b.pk and b.failure_threshold == 2 and b.state == "closed"


def test_the_whole_cycle_is_persisted_and_ledgered():
    cb = CircuitBreaker.for_name("service:x")
    t0 = timezone.now()
    with time_machine.travel(t0, tick=False):
        results = [cb.record(False) for _ in range(5)]
        assert results == [None, None, None, None, "opened"]
        assert not cb.allow()
    assert CircuitBreaker.objects.get(name="service:x").state == "open"

    with time_machine.travel(t0 + timedelta(seconds=61), tick=False):
        assert cb.allow() is True
        assert CircuitBreaker.objects.get(pk=cb.pk).state == "half_open"
        assert cb.allow() is False  # trial in flight
        assert cb.record(True) is None
        assert cb.allow() is True
        assert cb.record(True) == "closed"
    assert events("service:x") == ["health.circuit_opened", "health.circuit_half_opened", "health.circuit_closed"]
    opened = LedgerEntry.objects.get(subject="service:x", event_type="health.circuit_opened")
    assert opened.severity == "warning" and opened.data["consecutive_failures"] == 5


def test_a_stale_instance_sees_the_state_another_process_wrote():
    mine = CircuitBreaker.for_name("service:y", failure_threshold=2)
    theirs = CircuitBreaker.objects.get(pk=mine.pk)
    theirs.record(False)
    assert mine.record(False) == "opened"  # counts theirs too
    assert mine.state == "open" and mine.consecutive_failures == 2


def test_reset_closes_and_names_the_actor():
    cb = CircuitBreaker.for_name("worker:w", failure_threshold=1)
    cb.record(False)
    cb.reset(actor="alice")
    fresh = CircuitBreaker.objects.get(pk=cb.pk)
    assert fresh.state == "closed" and fresh.consecutive_failures == 0 and fresh.opened_at is None
    entry = LedgerEntry.objects.filter(event_type="health.circuit_reset").get()
    assert entry.actor == "alice" and entry.subject == "worker:w" and entry.data["previous_state"] == "open"


def test_record_context_reaches_the_ledger_and_can_lower_severity():
    cb = CircuitBreaker.for_name("service:dep", failure_threshold=1)
    cb.record(False, context={"root_cause": "db", "severity": "info"})
    entry = LedgerEntry.objects.get(event_type="health.circuit_opened")
    assert entry.severity == "info" and entry.data["root_cause"] == "db" and "root cause: db" in entry.message


def _race(n: int, target) -> list:
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        try:
            barrier.wait()
            results[i] = target()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.django_db(transaction=True)
class TestRaces:
    def test_concurrent_records_lose_no_count_and_open_once(self):
        CircuitBreaker.for_name("service:r", failure_threshold=40)

        def hammer():
            cb = CircuitBreaker.objects.get(name="service:r")
            return [cb.record(False) for _ in range(10)]

        results = _race(4, hammer)
        transitions = [t for batch in results for t in batch if t]
        cb = CircuitBreaker.objects.get(name="service:r")
        assert cb.consecutive_failures == 40 and cb.state == "open"
        assert transitions == ["opened"]
        assert LedgerEntry.objects.filter(event_type="health.circuit_opened").count() == 1

    def test_only_one_caller_gets_the_half_open_trial(self):
        cb = CircuitBreaker.for_name("service:t", failure_threshold=1)
        cb.record(False)
        CircuitBreaker.objects.filter(pk=cb.pk).update(opened_at=timezone.now() - timedelta(seconds=61))

        def ask():
            return CircuitBreaker.objects.get(name="service:t").allow()

        results = _race(4, ask)
        assert sorted(results) == [False, False, False, True]
        assert LedgerEntry.objects.filter(event_type="health.circuit_half_opened").count() == 1
