"""First-run set-up used by `make run`: an admin login, the optional admin token, the
loop state and the demo data. Safe to run any number of times."""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

from orchestration.loop.models import LoopState
from orchestrator_site.private import write_private


class Command(BaseCommand):
    help = (
        "Create the admin login (its password in var/admin-password.txt), the admin API token "
        "from ORCHESTRATOR_ADMIN_TOKEN, and the demo data."
    )

    def add_arguments(self, parser):
        parser.add_argument("--no-demo", action="store_true", help="Skip the demo data.")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args, no_demo: bool, port: int, **options):
        username = os.environ.get("ADMIN_USERNAME", "admin")
        password_file = settings.VAR_DIR / "admin-password.txt"
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            user = User.objects.create_superuser(username, f"{username}@localhost", password)
            # Created 0600 in the 0700 var/; start-up names the file, never the password,
            # so it stays out of terminals, logs and CI output.
            write_private(password_file, password + "\n")
        if password_file.exists():
            login = f"{username}, password in {password_file}"
        else:
            login = f"{username} (password set by you earlier; `manage.py changepassword {username}` resets it)"
        if settings.ADMIN_TOKEN:
            Token.objects.filter(user=user).exclude(key=settings.ADMIN_TOKEN).delete()
            Token.objects.get_or_create(user=user, key=settings.ADMIN_TOKEN)
        LoopState.get()
        if not no_demo:
            call_command("load_demo", verbosity=options.get("verbosity", 1))
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Dashboard: http://127.0.0.1:{port}/"))
        self.stdout.write(self.style.SUCCESS(f"Admin:     http://127.0.0.1:{port}/admin/"))
        self.stdout.write(self.style.SUCCESS(f"Login:     {login}"))
        self.stdout.write(f"API token: python manage.py create_api_token {username} --staff")
        self.stdout.write("")
