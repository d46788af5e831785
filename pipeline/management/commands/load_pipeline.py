"""Load a pipeline definition from a YAML file in the seed's format (gates: and
pipeline: stage_timeouts:). Creates it, or updates the definition of that name."""

from __future__ import annotations

from pathlib import Path

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from orchestration.core.models.ledger import record
from pipeline.definitions import DefinitionError, parse
from pipeline.models import PipelineDefinition


class Command(BaseCommand):
    help = "Load a pipeline definition from a YAML file (see examples/pipelines/)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="YAML file with gates: and pipeline: stage_timeouts:")
        parser.add_argument("--name", help="Definition name (default: the file's name: key, else 'default')")
        parser.add_argument("--default", action="store_true", help="Make it the definition new jobs use")

    def handle(self, *args, file: str, name: str | None, default: bool, **options):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise CommandError(f"{file}: not valid YAML: {exc}")
        try:
            spec = parse(data, name=name, task_timeout_seconds=settings.Q_CLUSTER["timeout"])
        except DefinitionError as exc:
            raise CommandError(f"{file}: " + "\n  ".join(["invalid pipeline definition:", *exc.errors]))
        with transaction.atomic():
            extra = {"description": f"Loaded from {path.name}"}
            if default:
                PipelineDefinition.objects.filter(is_default=True).exclude(name=spec.name).update(is_default=False)
                extra["is_default"] = True
            definition, created = PipelineDefinition.from_spec(spec, **extra)
            record(
                "pipeline.definition_loaded",
                f"Pipeline definition {definition.name} {'created' if created else 'updated'} from {path.name}",
                subject=f"pipeline.definition:{definition.name}",
                data={"stages": spec.stages, "gates": list(spec.gates), "file": str(path)},
                actor="load_pipeline",
            )
        gates = [s for s, g in spec.gates.items() if g["required"]]
        self.stdout.write(
            self.style.SUCCESS(
                f"{'Created' if created else 'Updated'} pipeline definition {definition.name!r}: "
                f"{len(spec.stages)} stages ({' → '.join(spec.stages)}), gates at {', '.join(gates) or 'none'}"
                + (" [default]" if definition.is_default else "")
            )
        )
