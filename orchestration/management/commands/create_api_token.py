from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

from orchestration.core.models.ledger import record


class Command(BaseCommand):
    help = "Create (or show) the API token of a user, creating the user if missing. The token is the last line."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true", help="Make the user staff (allowed to write).")

    def handle(self, *args, username: str, staff: bool, **options):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
        if staff and not user.is_staff:
            user.is_staff = True
        user.save()
        token, token_created = Token.objects.get_or_create(user=user)
        if token_created:
            record("auth.token_created", f"API token created for {username}", subject=f"user:{username}", actor="cli")
        self.stderr.write(
            f"{'Created' if created else 'Found'} user {username}{' (staff)' if user.is_staff else ''}; "
            f"use: Authorization: Bearer <token>"
        )
        self.stdout.write(token.key)
