"""Demo loader: seed 004's fleet, the 14 workers of ``examples/fleet.yaml`` with their
schedules, dependencies, timeouts and categories, named ``demo-…`` and calling this
server's own ``/demo/workers/`` endpoints (demo_targets.py), so score reports and
anomalies appear with no outside system. One run of each worker is queued at once, so
the first visit shows runs as soon as the cluster takes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from orchestration.core.demo import DEMO_PREFIX, register_demo
from orchestration.core.models import Anomaly
from orchestration.fleet import fleet_file
from orchestration.fleet.builtins import ensure_builtin_workers
from orchestration.fleet.demo_targets import PLAYBOOK_SCHEMA
from orchestration.fleet.models import Worker
from orchestration.fleet.runner import request_run

EXAMPLE_FLEET = Path(settings.BASE_DIR) / "examples" / "fleet.yaml"


def demo_name(name: str) -> str:
    return f"{DEMO_PREFIX}-{name}"


def demo_fleet_specs(base_url: str | None = None) -> list[dict[str, Any]]:
    """The example fleet as demo workers: renamed, wired to each other by the new names,
    each target pointed at this server's demo endpoint for that worker."""

    base = (base_url or settings.FLEET_DEMO_BASE_URL).rstrip("/")
    out = []
    for spec in fleet_file.parse(EXAMPLE_FLEET.read_text(), str(EXAMPLE_FLEET)):
        name = spec["name"]
        target = {**spec["target"], "url": f"{base}/demo/workers/{name}"}
        out.append(
            {
                **spec,
                "name": demo_name(name),
                "description": f"{DEMO_PREFIX}: {spec['description']}",
                "depends_on": [demo_name(n) for n in spec["depends_on"]],
                "optional_depends_on": [demo_name(n) for n in spec["optional_depends_on"]],
                "target": target,
                "output_schema": PLAYBOOK_SCHEMA if name == "playbook" else spec["output_schema"],
                # Reports that lean on data collected just before: wait for it, in turn.
                "overlap": "buffer_one" if spec["category"] in ("intelligence", "reporting") else spec["overlap"],
                "pause_after_failures": 5 if name == "analytics-flush" else spec["pause_after_failures"],
            }
        )
    return out


class WorkersDemo:
    def load(self) -> str:

        ensure_builtin_workers()
        if Worker.objects.filter(name__startswith=f"{DEMO_PREFIX}-").exists():
            return "already loaded"
        specs = demo_fleet_specs()
        with transaction.atomic():
            workers = [Worker.objects.create(**spec) for spec in specs]
            # Data workers first, so those depending on them find fresh data sooner.
            for worker in sorted(workers, key=lambda w: bool(w.depends_on)):
                request_run(worker, actor="demo")
        return (
            f"{len(workers)} demo workers (seed 004's fleet) calling {settings.FLEET_DEMO_BASE_URL}/demo/workers/, "
            f"one run of each queued"
        )

    def remove(self) -> int:

        anomalies = Anomaly.objects.filter(subject__startswith=f"worker:{DEMO_PREFIX}-").delete()[0]
        return anomalies + Worker.objects.filter(name__startswith=f"{DEMO_PREFIX}-").delete()[0]


register_demo("workers", WorkersDemo())
