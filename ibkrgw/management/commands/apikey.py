"""`manage.py apikey create|list|revoke`: API keys for programs, each with scope read or trade.

    manage.py apikey create --name my-bot --scope trade [--expires-days 90]   (prints the key once)
    manage.py apikey list
    manage.py apikey revoke PREFIX

Creating and revoking a key each write an audit entry in the same transaction.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ibkrgw.actors import Actor, Source
from ibkrgw.apikeys import apikey_create, apikey_revoke, apikey_rows, prefix_of, unreadable_key_problem
from ibkrgw.models import Scope, ScopedAPIKey


def _cli_actor() -> Actor:
    return Actor.system(label="cli", source=Source.CLI)


class Command(BaseCommand):
    help = "Create, list and revoke API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{create,list,revoke}")
        create = sub.add_parser("create", help="create a key and print it once")
        create.add_argument("--name", required=True, help="a label for the key (max 50 characters)")
        create.add_argument("--scope", required=True, choices=Scope.values)
        create.add_argument("--expires-days", type=int, default=None, help="expire after this many days")
        sub.add_parser("list", help="list keys (never the secrets)")
        revoke = sub.add_parser("revoke", help="revoke a key by its prefix (cannot be undone)")
        revoke.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            self._create(options["name"], options["scope"], options["expires_days"])
        elif action == "list":
            self._list()
        else:
            self._revoke(options["prefix"])

    def _create(self, name: str, scope: str, expires_days: int | None) -> None:
        name = name.strip()
        if not name or len(name) > 50:
            raise CommandError("--name must be 1 to 50 characters")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1")
        key, secret = apikey_create(name=name, scope=scope, expires_days=expires_days, actor=_cli_actor())
        self.stdout.write(
            f"Created API key {key.prefix} ({key.name}, scope {key.scope}). Store it now; it is not shown again:"
        )
        self.stdout.write(secret)

    def _list(self) -> None:
        self.stdout.write(f"{'PREFIX':<10} {'NAME':<24} {'SCOPE':<6} {'CREATED':<20} {'REVOKED':<8} {'MAC':<4} EXPIRES")
        distrusted = False
        for pk, key in apikey_rows():
            if isinstance(key, Exception):
                self.stdout.write(f"{prefix_of(pk):<10} {unreadable_key_problem(key)}, refused")
                continue
            expires = key.expiry_date.strftime("%Y-%m-%d %H:%M") if key.expiry_date else "never"
            if key.has_expired:
                expires += " (expired)"
            intact = key.row_intact()
            distrusted = distrusted or not intact
            self.stdout.write(
                f"{key.prefix:<10} {key.name[:24]:<24} {key.scope:<6} {key.created:%Y-%m-%d %H:%M:%S}  "
                f"{'yes' if key.revoked else 'no':<8} {'ok' if intact else 'BAD':<4} {expires}"
            )
        if distrusted:
            self.stdout.write("MAC BAD: the row was changed outside the gateway, which refuses the key (audit_verify).")

    def _revoke(self, prefix: str) -> None:
        try:
            key, changed = apikey_revoke(prefix=prefix.strip(), actor=_cli_actor())
        except ScopedAPIKey.DoesNotExist:
            raise CommandError(f"no API key with prefix {prefix!r}") from None
        if changed:
            self.stdout.write(f"Revoked API key {key.prefix} ({key.name}).")
        else:
            self.stdout.write(f"API key {key.prefix} ({key.name}) was already revoked.")
