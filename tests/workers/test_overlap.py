"""Overlap policies with real runs: a first run is still going (its target blocks in a
thread, holding the real lock) when the next one starts."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import IntegrityError, connection, transaction

from orchestration.core.models import Job, LedgerEntry
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.fleet.runner import acquire_lock, execute_run, request_run
from tests.workers import targets
from tests.workers.conftest import target

# Jobs stay queued (no inline run at commit): each test executes the runs it means to.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("broker_only")]


@pytest.fixture(autouse=True)
def _reset_hold():
    targets.hold_started.clear()
    targets.hold_release.clear()
    targets.HOLD_CALLS.clear()
    yield
    targets.hold_release.set()  # never leave a thread waiting


def start_first(worker: Worker) -> tuple[WorkerRun, threading.Thread]:
    """Queue a run and execute it in a thread until its target is going."""
    run = request_run(worker)
    results = []

    def go():
        try:
            results.append(execute_run(run.pk))
        finally:
            connection.close()

    thread = threading.Thread(target=go)
    thread.start()
    assert targets.hold_started.wait(10)
    return run, thread


def finish_first(thread: threading.Thread) -> None:
    targets.hold_release.set()
    thread.join(20)
    assert not thread.is_alive()


def state(run: WorkerRun) -> str:
    run.refresh_from_db()
    return run.status


def test_skip_skips_the_new_run_while_one_is_going(make_worker):
    worker = make_worker(target=target("hold"), overlap="skip")
    first, thread = start_first(worker)
    second = request_run(worker)
    outcome = execute_run(second.pk)
    assert outcome["status"] == "skipped" and outcome["reason"] == "lock_held"
    second.refresh_from_db()
    assert second.skipped_detail["overlap"] == "skip" and second.skipped_detail["holder"].endswith(first.execution_id)
    finish_first(thread)
    assert state(first) == "succeeded" and targets.HOLD_CALLS == ["first"]


def test_buffer_one_keeps_one_waiting_run_and_starts_it_when_the_current_ends(make_worker):
    worker = make_worker(target=target("hold"), overlap="buffer_one")
    first, thread = start_first(worker)
    second, third = request_run(worker), request_run(worker)
    assert execute_run(second.pk)["status"] == "buffered"
    outcome = execute_run(third.pk)
    assert (outcome["status"], outcome["reason"]) == ("skipped", "buffer_full")
    third.refresh_from_db()
    assert third.skipped_detail["buffered"] == second.execution_id
    assert state(second) == "buffered"

    finish_first(thread)  # its finish hands the lock on: the buffered run is queued again
    second.refresh_from_db()
    assert second.status == "queued" and second.job_id != first.job_id
    assert Job.objects.get(pk=second.job_id).status == "pending"
    execute_run(second.pk)
    assert [state(first), state(second), state(third)] == ["succeeded", "succeeded", "skipped"]
    assert targets.HOLD_CALLS == ["first", "next"]


def test_buffer_all_runs_every_waiting_run_in_turn_oldest_first(make_worker):
    worker = make_worker(target=target("hold"), overlap="buffer_all")
    _first, thread = start_first(worker)
    waiting = [request_run(worker) for _ in range(3)]
    assert [execute_run(r.pk)["status"] for r in waiting] == ["buffered"] * 3
    finish_first(thread)
    for expected in waiting:
        queued = WorkerRun.objects.filter(worker=worker, status="queued")
        assert list(queued.values_list("pk", flat=True)) == [expected.pk]  # one at a time, oldest first
        assert execute_run(expected.pk)["status"] == "succeeded"
    assert not WorkerRun.objects.filter(worker=worker, status__in=("queued", "buffered")).exists()
    assert targets.HOLD_CALLS == ["first", "next", "next", "next"]


def test_cancel_other_cancels_the_going_run_and_starts_the_new_one(make_worker):
    worker = make_worker(target=target("hold"), overlap="cancel_other")
    first, thread = start_first(worker)
    second = request_run(worker)
    assert execute_run(second.pk)["status"] == "succeeded"
    first.refresh_from_db()
    assert first.status == "canceled" and second.execution_id in first.error
    assert LedgerEntry.objects.filter(event_type="worker.run_canceled").count() == 1
    finish_first(thread)  # what the canceled target returns is dropped
    assert state(first) == "canceled"
    worker.refresh_from_db()
    assert worker.last_status == "succeeded" and worker.lock_owner == ""


def test_allow_all_runs_side_by_side(make_worker):
    worker = make_worker(target=target("hold"), overlap="allow_all")
    first, thread = start_first(worker)
    second = request_run(worker)
    assert execute_run(second.pk)["status"] == "succeeded"
    assert state(first) == "running"  # still going while the second finished
    finish_first(thread)
    assert state(first) == "succeeded"


def test_a_run_left_buffered_after_its_policy_changed_is_started_by_the_sweep(make_worker):
    from orchestration.fleet.runner import promote_stragglers

    worker = make_worker(target=target("ok"), overlap="skip")
    left = request_run(worker)
    WorkerRun.objects.filter(pk=left.pk).update(status="buffered")
    assert promote_stragglers() == [left.pk]
    assert state(left) == "queued" and execute_run(left.pk)["status"] == "succeeded"


def test_buffer_one_racing_runs_leave_exactly_one_buffered(make_worker):
    """Four runs reach a held lock at once: one takes the single place, three are
    skipped as buffer_full (on PostgreSQL the NOT EXISTS alone let two through)."""
    worker = make_worker(overlap="buffer_one")
    assert acquire_lock(worker, "other-node:run")
    runs = [request_run(worker) for _ in range(4)]
    barrier = threading.Barrier(len(runs))
    outcomes: list[dict] = []

    def go(run: WorkerRun) -> None:
        try:
            barrier.wait()
            outcomes.append(execute_run(run.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=go, args=(run,)) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(o["status"] for o in outcomes) == ["buffered", "skipped", "skipped", "skipped"]
    assert WorkerRun.objects.filter(worker=worker, status="buffered").count() == 1
    assert {o.get("reason") for o in outcomes if o["status"] == "skipped"} == {"buffer_full"}


def test_the_database_refuses_a_second_buffer_one_place_even_past_the_check(make_worker):
    """What a lost race looks like from the second runner: its NOT EXISTS saw no
    waiting run, and its UPDATE still fails."""
    worker = make_worker(overlap="buffer_one")
    first, second = request_run(worker), request_run(worker)
    WorkerRun.objects.filter(pk=first.pk).update(status="buffered", buffer_slot=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkerRun.objects.filter(pk=second.pk).update(status="buffered", buffer_slot=True)
    # buffer_all's waiting runs hold no slot: any number may wait.
    WorkerRun.objects.filter(pk=second.pk).update(status="buffered", buffer_slot=False)
    assert WorkerRun.objects.filter(worker=worker, status="buffered").count() == 2


class _SlowTarget(ThreadingHTTPServer):
    """An HTTP target on 127.0.0.1 whose first request holds until released (or 45 s);
    later requests answer at once."""

    daemon_threads = True

    def __init__(self) -> None:
        self.started, self.release, self.answered = threading.Event(), threading.Event(), threading.Event()
        self.calls: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server.calls.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                first = len(server.calls) == 1
                if first:
                    server.started.set()
                    server.release.wait(45)
                body = b'{"metrics": {"done": 1}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if first:
                    server.answered.set()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_cancel_other_stops_the_running_target_in_flight_and_the_new_run_starts(make_worker, settings):
    settings.FLEET_HEARTBEAT_SECONDS = 0.2
    server = _SlowTarget()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.FLEET_BASE_URL = f"http://127.0.0.1:{server.server_address[1]}"
        worker = make_worker(
            overlap="cancel_other",
            timeout_seconds=60,  # longer than the target holds: only the cancel can stop it
            target={"type": "http", "method": "POST", "url": "{base_url}/work"},
        )
        first, second = request_run(worker), request_run(worker)
        replaced: list[dict] = []

        def next_firing() -> None:  # a newer run arrives while the first waits on its target
            try:
                assert server.started.wait(10)
                replaced.append(execute_run(second.pk))
            finally:
                connection.close()

        newer = threading.Thread(target=next_firing)
        newer.start()
        # The first run executes here, in the main thread, as in a cluster worker.
        began = time.monotonic()
        outcome = execute_run(first.pk)
        took = time.monotonic() - began
        stopped_before_the_target_answered = not server.answered.is_set()
        newer.join(20)
        assert stopped_before_the_target_answered, f"the first run ended after its target answered ({took:.1f} s)"
        assert outcome == {"status": "stale"}, outcome
        assert replaced and replaced[0]["status"] == "succeeded"
        first.refresh_from_db()
        assert first.status == "canceled" and second.execution_id in first.error
        assert state(second) == "succeeded" and server.calls == ["/work", "/work"]
        worker.refresh_from_db()
        assert worker.lock_owner == "" and worker.last_status == "succeeded"
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
