from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from orchestration.fleet.fleet_file import FleetFileError, load


class Command(BaseCommand):
    help = "Create or update workers from a YAML fleet file (idempotent; --dry-run shows the diff)."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--dry-run", action="store_true", help="Show what would change; write nothing.")

    def handle(self, *args, file: str, dry_run: bool, **options):
        try:
            result = load(file, dry_run=dry_run)
        except FleetFileError as exc:
            raise CommandError(str(exc)) from None
        for line in result.lines():
            self.stdout.write(line)
        verb = "would change" if dry_run else "changed"
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(result.create)} to create, {len(result.update)} to update, {len(result.unchanged)} unchanged"
                f" ({verb} {len(result.create) + len(result.update)} worker(s))"
            )
        )
