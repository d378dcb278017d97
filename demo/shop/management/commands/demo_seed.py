"""``manage.py demo_seed``: the demo's data, created once (a second run leaves it as it is).

Called by ``demo/run.py`` before the worker starts, so the live leads below are sent as soon as it does:

- ``admin`` / ``admin``, a superuser, and ``viewer`` / ``viewer``, staff who may only view leads;
- customers who log in to the site with the password ``demo`` (one hash serves them all);
- historic customers written with ``bulk_create``, which sends no signals: they are not in the CRM yet,
  as years of users are when a site adopts crmify, and the admin's backfill brings them in;
- a few live sign-ups (saved normally, so crmify queues them), some contacted, one converted;
- a few leads the CRM refuses, so the admin's "failed" filter shows real messages.
"""

from __future__ import annotations

import random
from typing import Any

from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Permission, User
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from crmify import api
from shop.models import Subscription, UserProfile

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
]
CUSTOMER_PASSWORD = "demo"
COMPANIES = ["Analytical Engines Ltd", "Cobol & Co", "Bletchley Data", "Nordlys AS", ""]

#: Sign-ups that reach the CRM, and what happens to them after (None: nothing yet).
LIVE = [
    ("ada", "Ada", "Lovelace", "Analytical Engines Ltd", None),
    ("grace", "Grace", "Hopper", "Cobol & Co", "contacted"),
    ("alan", "Alan", "Turing", "Bletchley Data", "contacted"),
    ("ngozi", "Ngozi", "Okafor", "", "bought"),
    ("soren", "", "", "Nordlys AS", None),  # no name: the mapper's fallback sends the user name
]
#: Leads the sandbox CRM refuses: (user name, plan, status). The CRM's Plan dropdown has no
#: "Enterprise" (it answers 400 with its own message); the account has no "Nurturing" status.
FAILING = [
    ("erin", "Enterprise", None),
    ("frank", "Enterprise", None),
    ("nadia", "Free", "Nurturing"),
]


class Command(BaseCommand):
    help = (
        "Create the demo's users, historic customers (not yet in the CRM), live and failing leads."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--historic", type=int, default=500)

    def handle(self, *args: Any, historic: int, **options: Any) -> None:
        if User.objects.filter(username="admin").exists():
            self.stdout.write("Demo data already there.")
            return
        with transaction.atomic():
            self.create_staff()
            self.create_historic(historic)
            self.create_live(make_password(CUSTOMER_PASSWORD))
        self.stdout.write(
            f"Created {historic} historic customers (not in the CRM yet), {len(LIVE)} sign-ups "
            f"and {len(FAILING)} leads the CRM will refuse.\n"
            f"Admin: admin / admin (superuser), viewer / viewer (may only view leads); "
            f"customers log in with the password {CUSTOMER_PASSWORD!r}."
        )

    def create_staff(self) -> None:
        User.objects.create_superuser("admin", "admin@example.com", "admin")
        viewer = User.objects.create_user("viewer", "viewer@example.com", "viewer", is_staff=True)
        viewer.user_permissions.add(
            Permission.objects.get(content_type__app_label="crmify", codename="view_lead")
        )

    def create_historic(self, count: int) -> None:
        rng = random.Random(7)
        password = make_password(None)
        # bulk_create on purpose: it sends no signals, so crmify does not sync these rows. The users it
        # returns have their pks (SQLite 3.35+ and PostgreSQL return them).
        users = User.objects.bulk_create(
            User(
                username=f"customer{i:04d}",
                email=f"customer{i:04d}@example.com",
                first_name=rng.choice(FIRST),
                last_name=rng.choice(LAST),
                password=password,
            )
            for i in range(count)
        )
        UserProfile.objects.bulk_create(
            UserProfile(user=user, company=rng.choice(COMPANIES), signup_source="Legacy shop")
            for user in users
        )

    def create_live(self, password: str) -> None:
        for username, first, last, company, then in LIVE:
            profile = self.sign_up(username, first, last, password, company=company)
            if then == "contacted":
                api.set_status(profile, "Contacted")
            elif then == "bought":
                Subscription.objects.create(profile=profile, plan="Pro", paid=True)
        for username, plan, status in FAILING:
            profile = self.sign_up(username, username.title(), "Example", password, plan=plan)
            if status:
                api.set_status(profile, status)

    def sign_up(
        self, username: str, first: str, last: str, password: str, **profile: Any
    ) -> UserProfile:
        """A customer as the sign-up page makes one (``password`` already hashed)."""
        user = User.objects.create(
            username=username,
            email=f"{username}@example.com",
            first_name=first,
            last_name=last,
            password=password,
        )
        return UserProfile.objects.create(user=user, signup_source="Website", **profile)
