"""Import every module of the project and run Django's system checks, in an
environment that has only requirements.txt installed (what `make run` installs).

The test suite runs with the test tools installed too, so a runtime import satisfied
only by one of them (it happened with prometheus-client) would pass every test and
still stop `make run` on a fresh machine. `.ci/run` runs this in a virtualenv of its own.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrator_site", "orchestration", "health", "pipeline")


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
    warnings.simplefilter("ignore")  # third-party deprecation notices are not what this checks
    import django
    from django.core.management import call_command

    django.setup()
    failed: list[str] = []
    count = 0
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts:
                continue
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            try:
                importlib.import_module(module)
                count += 1
            except Exception as exc:  # report every module that cannot load, not the first
                failed.append(f"{module}: {type(exc).__name__}: {exc}")
    if failed:
        print("Modules that do not import with requirements.txt alone:", *failed, sep="\n  ")
        return 1
    call_command("check")
    print(f"{count} modules import with requirements.txt alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
