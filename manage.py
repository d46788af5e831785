#!/usr/bin/env python
"""Django's command-line utility for the Orchestrator."""

import faulthandler
import os
import signal
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
    # `kill -USR1 <pid>` prints every thread's stack to stderr: how an operator (or a
    # failing end-to-end test) sees where a process that stopped answering is stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
