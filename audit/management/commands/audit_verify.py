"""`manage.py audit_verify`: verify the whole ledger; exit 0 if intact, 1 naming the first broken row.

manage.py audit_verify                       # triggers, audit chain, seal chain, every ledger row
manage.py audit_verify --anchor SEQ:SHA256   # ... and the chain still holds a head recorded earlier
manage.py audit_verify --head                # print the current head only (to record it elsewhere)
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone

from audit.verify import Head, ledger_head, verify_ledger

logger = logging.getLogger("audit.anchor")
ANCHOR = re.compile(r"^(?:seq=)?(\d+)[:\s]+(?:sha256=)?([0-9a-f]{64})$")
SHOWN = 20


def parse_anchor(text: str) -> Head:
    match = ANCHOR.match(text.strip())
    if not match:
        raise CommandError(f"--anchor must be SEQ:SHA256 (a head printed by --head), not {text!r}", returncode=2)
    return Head(int(match.group(1)), match.group(2))


class Command(BaseCommand):
    help = (
        "Verify the ledger: append-only triggers, the audit hash chain, the seal chain and every ledger row "
        "against its seal. Exits 1 naming the first broken row; prints the chain head."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--chunk-size", type=int, default=2000, help="rows read per database round trip")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)
        parser.add_argument(
            "--head",
            action="store_true",
            help="print the chain head as one JSON line (and log it on the audit.anchor logger), without verifying",
        )
        parser.add_argument(
            "--anchor",
            metavar="SEQ:SHA256",
            help="a head recorded earlier: fail unless the chain still holds it (detects a rewrite of the whole file)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        if options["head"]:
            current = ledger_head(using)
            line = json.dumps(
                {
                    "seq": current.seq if current else 0,
                    "sha256": current.hash if current else None,
                    "at": timezone.now().isoformat(timespec="seconds"),
                },
                sort_keys=True,
            )
            logger.info("ledger head %s", line)
            self.stdout.write(line)
            return

        anchor = parse_anchor(options["anchor"]) if options["anchor"] else None
        report = verify_ledger(using, chunk_size=options["chunk_size"], anchor=anchor)
        head = f"head: {report.head}" if report.head else "head: none (empty ledger)"
        # Every run leaves the head in the logs too, so a log shipper keeps a copy off this machine.
        logger.info("ledger %s, %s", "verified" if report.ok else "verification FAILED", head)
        if not report.ok:
            shown = report.problems[:SHOWN]
            more = len(report.problems) - len(shown)
            lines = [f"ledger verification FAILED: {len(report.problems)} problem(s); the first:"]
            lines += [f"  {problem}" for problem in shown]
            if more:
                lines.append(f"  ... and {more} more")
            lines.append(head)
            raise CommandError("\n".join(lines), returncode=1)
        rows = sum(report.rows.values())
        self.stdout.write(
            self.style.SUCCESS(
                f"OK: audit chain intact, {report.audit_entries} entries verified; "
                f"{rows} ledger rows in {len(report.rows)} tables match {report.seals} seals; "
                f"{report.api_keys} API keys match their MACs, {report.users} users theirs; triggers in place."
                + (f" Anchor {anchor} holds." if anchor else "")
            )
        )
        self.stdout.write(head)
