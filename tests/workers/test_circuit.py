"""Each worker's own breaker, reached through ``Worker.circuit``: runs feed it, gates
read it, renames and deletes carry it, and the migration links the breakers that
existed by name."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from health.models import CircuitBreaker
from orchestration.fleet.models import Worker
from orchestration.fleet.runner import check_gates, execute_run, request_run
from tests.workers.conftest import target

pytestmark = pytest.mark.django_db


def test_it_gives_each_worker_its_own_breaker(make_worker):
    a, b = make_worker("a"), make_worker("b")
    assert a.ensure_circuit().pk != b.ensure_circuit().pk
    a.refresh_from_db()
    assert a.ensure_circuit().pk == a.circuit_id  # created once, then reached
    assert CircuitBreaker.objects.get(worker=a).name == "worker:a"
    assert Worker.objects.get(circuit__name="worker:b") == b


def test_failed_runs_open_the_workers_own_breaker_and_the_next_run_is_skipped(make_worker):
    worker = make_worker(target=target("boom"))
    bystander = make_worker("bystander")
    bystander.ensure_circuit()
    CircuitBreaker.objects.filter(pk=worker.ensure_circuit().pk).update(failure_threshold=2)
    for _ in range(2):
        execute_run(request_run(worker).pk)
    worker.refresh_from_db()
    assert worker.circuit.state == "open" and worker.circuit.consecutive_failures == 2
    assert CircuitBreaker.objects.get(pk=bystander.circuit_id).state == "closed"
    skipped = request_run(worker)
    assert execute_run(skipped.pk)["reason"] == "circuit_open"


def test_a_worker_has_no_breaker_until_it_first_runs(make_worker):
    worker = make_worker()
    assert worker.circuit_id is None and worker.breaker_state == "closed"
    assert not CircuitBreaker.objects.filter(name="worker:collector").exists()
    execute_run(request_run(worker).pk)
    worker.refresh_from_db()
    assert worker.circuit.name == "worker:collector" and worker.circuit.consecutive_successes == 1


def test_gating_a_run_on_a_closed_breaker_writes_nothing_and_opens_no_transaction(make_worker):
    worker = make_worker()
    run = request_run(worker)
    version = worker.ensure_circuit().version
    with CaptureQueriesContext(connection) as queries:
        assert check_gates(worker, run, timezone.now()) is None
    statements = [q["sql"].upper() for q in queries.captured_queries]
    assert not any(s.startswith(("UPDATE", "INSERT", "SAVEPOINT", "BEGIN")) for s in statements), statements
    assert CircuitBreaker.objects.get(pk=worker.circuit_id).version == version


def test_a_renamed_worker_keeps_its_breaker_and_its_state(make_worker):
    worker = make_worker("old")
    worker.ensure_circuit().trip(actor="ops", reason="test")
    worker.name = "new"
    worker.save()
    circuit = CircuitBreaker.objects.get(worker=worker)
    assert (circuit.pk, circuit.name, circuit.state) == (worker.circuit_id, "worker:new", "open")


def test_a_deleted_workers_breaker_goes_with_it(make_worker):
    worker = make_worker()
    pk = worker.ensure_circuit().pk
    worker.delete()
    assert not CircuitBreaker.objects.filter(pk=pk).exists()
    assert make_worker().breaker_state == "closed"


def test_the_api_and_the_fleet_status_read_the_one_to_one(make_worker, user_client):
    worker = make_worker()
    make_worker("calm").ensure_circuit()
    worker.ensure_circuit().trip(actor="ops", reason="test")
    # A breaker that only has the old naming scheme in common with a worker is not its own.
    CircuitBreaker.objects.filter(name="worker:calm").update(name="worker:calm-old")
    CircuitBreaker.objects.create(name="worker:calm", state="open")
    assert user_client.get("/api/v1/workers/collector/").json()["breaker_state"] == "open"
    listed = {w["name"]: w["breaker_state"] for w in user_client.get("/api/v1/workers/").json()["results"]}
    assert (listed["collector"], listed["calm"]) == ("open", "closed")
    status = user_client.get("/api/v1/workers/status").json()
    assert status["summary"]["circuits_open"] == 1
    assert status["workers"]["collector"]["breaker_state"] == "open"
    assert status["workers"]["calm"]["breaker_state"] == "closed"


@pytest.mark.django_db(transaction=True)
def test_the_migration_links_the_breakers_workers_had_by_name():
    before = [("orchestration", "0012_job_claim_index"), ("health", "0004_service_category")]
    after = [("orchestration", "0013_worker_circuit")]
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(before)
        old = executor.loader.project_state(before).apps
        OldWorker = old.get_model("orchestration", "Worker")
        OldBreaker = old.get_model("health", "CircuitBreaker")
        opened_at = timezone.now()
        OldWorker.objects.create(name="kept", category="collection", target={})
        OldWorker.objects.create(name="fresh", category="collection", target={})
        OldBreaker.objects.create(name="worker:kept", state="open", consecutive_failures=7, opened_at=opened_at)
        OldBreaker.objects.create(name="worker:gone", state="open")

        executor = MigrationExecutor(connection)
        executor.migrate(after)
        # The models as of that migration: the current ones have columns added later.
        Worker = executor.loader.project_state(after).apps.get_model("orchestration", "Worker")
        kept = Worker.objects.get(name="kept")
        assert (kept.circuit.name, kept.circuit.state, kept.circuit.consecutive_failures) == ("worker:kept", "open", 7)
        assert kept.circuit.opened_at == opened_at
        assert Worker.objects.get(name="fresh").circuit_id is None
        assert not Worker.objects.filter(circuit__name="worker:gone").exists()
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
