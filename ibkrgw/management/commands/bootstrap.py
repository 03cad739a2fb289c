"""`manage.py bootstrap`: what a first run needs: an admin user and a trading API key, made once."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from ibkrgw.models import ScopedAPIKey


class Command(BaseCommand):
    help = "Create the first admin user and API key when none exist (prints their secrets once)."

    def handle(self, *args, **options):
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "", password)
            self.stdout.write(
                self.style.WARNING(
                    f"First run: admin user 'admin' with password {password} (shown once; change it with "
                    "'manage.py changepassword admin')."
                )
            )
        if not ScopedAPIKey.objects.exists():
            self.stdout.write("First run: an API key with scope 'trade' (shown once):")
            call_command("apikey", "create", "--name", "local", "--scope", "trade", stdout=self.stdout)
