"""The persisted breaker: atomic transitions, ledger entries, races, restarts."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
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


def sql(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"].upper() for q in queries.captured_queries]


def test_allow_on_a_closed_breaker_asks_the_database_nothing():
    cb = CircuitBreaker.for_name("service:quiet")
    before = CircuitBreaker.objects.get(pk=cb.pk)
    with CaptureQueriesContext(connection) as queries:
        assert cb.allow() is True
    assert queries.captured_queries == []
    after = CircuitBreaker.objects.get(pk=cb.pk)
    assert (after.version, after.updated_at) == (before.version, before.updated_at)


def test_a_result_is_one_conditional_update_and_no_lock():
    cb = CircuitBreaker.for_name("service:one")
    with CaptureQueriesContext(connection) as queries:
        assert cb.record(False) is None
    [update] = sql(queries)
    assert update.startswith("UPDATE") and '"VERSION" = 0' in update.split("WHERE")[1]
    assert CircuitBreaker.objects.get(pk=cb.pk).consecutive_failures == 1 and cb.version == 1


def test_a_lost_swap_rereads_once_and_recomputes():
    mine = CircuitBreaker.for_name("service:lost", failure_threshold=3)
    CircuitBreaker.objects.get(pk=mine.pk).record(False)
    with CaptureQueriesContext(connection) as queries:
        assert mine.record(False) is None
    statements = [q.split()[0] for q in sql(queries)]
    assert statements == ["UPDATE", "SELECT", "UPDATE"]
    assert not any("FOR UPDATE" in q for q in sql(queries))
    assert mine.consecutive_failures == 2 and mine.version == 2


def test_trip_opens_at_once_and_ledgers_actor_and_reason():
    cb = CircuitBreaker.for_name("worker:tripped")
    cb.record(False)
    assert cb.trip(actor="orchestrator", reason="recovery of HIGH_FAILURE_RATE") == "opened"
    opened_at = CircuitBreaker.objects.get(pk=cb.pk).opened_at
    assert cb.state == "open" and opened_at is not None and cb.consecutive_failures == 1
    assert cb.trip(actor="orchestrator", reason="again") is None  # already open: timeout not pushed back
    assert CircuitBreaker.objects.get(pk=cb.pk).opened_at == opened_at
    entry = LedgerEntry.objects.get(event_type="health.circuit_opened")
    assert entry.actor == "orchestrator" and entry.data["reason"] == "recovery of HIGH_FAILURE_RATE"
    assert entry.message == "Circuit worker:tripped opened by orchestrator: recovery of HIGH_FAILURE_RATE"


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

    def test_two_instances_read_alike_one_opens_and_both_count(self):
        # Both instances hold the same version before the race, so exactly one first
        # swap can win; the loser re-reads and counts on top of the winner's write.
        for round_ in range(5):
            name = f"service:pair{round_}"
            CircuitBreaker.for_name(name, failure_threshold=2).record(False)
            pair = [CircuitBreaker.objects.get(name=name) for _ in range(2)]
            results = _race(2, lambda pair=pair: pair.pop().record(False))
            cb = CircuitBreaker.objects.get(name=name)
            assert sorted(results, key=str) == [None, "opened"]
            assert cb.consecutive_failures == 3 and cb.state == "open" and cb.version == 3
        assert LedgerEntry.objects.filter(event_type="health.circuit_opened").count() == 5
