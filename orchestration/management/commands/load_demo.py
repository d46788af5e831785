"""Demo data, clearly labelled, loaded by `make run`; `--remove` takes it all away.

Each capability adds its part through ``orchestration.core.demo.register_demo``.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from orchestration.core import demo


class Command(BaseCommand):
    help = "Load the demo data (idempotent), or remove it with --remove."

    def add_arguments(self, parser):
        parser.add_argument("--remove", action="store_true")

    def handle(self, *args, remove: bool, **options):
        for name, loader in demo.loaders():
            if remove:
                count = loader.remove()
                self.stdout.write(f"demo {name}: removed {count}")
            else:
                self.stdout.write(f"demo {name}: loading…")
                self.stdout.write(f"demo {name}: {loader.load()}")
