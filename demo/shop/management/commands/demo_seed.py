"""Seeds the demo: a superuser, a few hundred historic users not yet in the CRM, and a few sign-ups."""

from __future__ import annotations

import random
from typing import Any

from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Zoë",
    "Søren",
    "Ngozi",
    "Hiroshi",
    "Amélie",
    "Ömer",
    "Priya",
    "Lars",
    "Mia",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Ødegaard",
    "Okafor",
    "Tanaka",
    "Dubois",
    "Yılmaz",
    "Patel",
    "",
    "Nguyen",
]


class Command(BaseCommand):
    help = "Create the demo superuser, historic users (bulk, not yet in the CRM) and a few live sign-ups."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--historic", type=int, default=300)
        parser.add_argument("--signups", type=int, default=8)

    def handle(self, *args: Any, historic: int, signups: int, **options: Any) -> None:
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.com", "admin")
        if User.objects.filter(username__startswith="historic").exists():
            self.stdout.write("Demo data already there.")
            return
        rng = random.Random(7)
        password = make_password(None)
        # bulk_create skips signals on purpose: these are the "years of users" a backfill brings in.
        User.objects.bulk_create(
            User(
                username=f"historic{i:04d}",
                email=f"historic{i:04d}@example.com",
                first_name=rng.choice(FIRST),
                last_name=rng.choice(LAST),
                password=password,
            )
            for i in range(historic)
        )
        for i in range(signups):
            User.objects.create_user(
                f"signup{i}",
                f"signup{i}@example.com",
                None,
                first_name=rng.choice(FIRST),
                last_name=rng.choice(LAST),
            )
        self.stdout.write(f"Created {historic} historic users and {signups} sign-ups.")
