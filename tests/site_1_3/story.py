"""What the site's own code does, one step per run: ``python story.py <step>`` on the site's settings.

Called by tests/test_example_site_1_3.py between runs of the site's ``db_worker``. Each step acts as the
site's views or its admin would (saves of users, profiles and subscriptions) and never calls crmify;
``report`` prints crmify's leads as JSON, ``admin`` prints the status of crmify's admin pages.
"""

import json
import sys

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from members.models import Subscription, UserProfile  # noqa: E402

from crmify.models import Lead  # noqa: E402

PEOPLE = [
    ("ada", "Ada", "Lovelace", "London"),
    ("grace", "Grace", "Hopper", "Arlington"),
    ("edsger", "Edsger", "Dijkstra", "Nuenen"),
]


def sign_up() -> None:
    """Three people sign up: a user, a profile, a trial subscription each."""
    for username, first, last, city in PEOPLE:
        user = User.objects.create_user(username, f"{username}@example.com", "pw")
        user.first_name, user.last_name = first, last
        user.save()
        profile = UserProfile.objects.create(auth=user, city=city)
        Subscription.objects.create(profile=profile)


def change() -> None:
    """Ada pays, Grace closes her account, Edsger corrects his name and is given a gift plan."""
    ada = Subscription.objects.get(profile__auth__username="ada")
    ada.plan = Subscription.PAID
    ada.save()
    grace = User.objects.get(username="grace")
    grace.is_active = False
    grace.save()
    Subscription.objects.get(profile__auth=grace).save()
    edsger = User.objects.get(username="edsger")
    edsger.first_name = "Edsger W."
    edsger.save()
    gift = Subscription.objects.get(profile__auth=edsger)
    gift.plan = Subscription.GIFT  # lead_status() says None: the status stays
    gift.save()


def leave() -> None:
    """Edsger's profile is deleted; Grace's user is deleted, which deletes her profile too."""
    UserProfile.objects.get(auth__username="edsger").delete()
    User.objects.get(username="grace").delete()


def report() -> None:
    leads = Lead.objects.order_by("email").values(
        "email", "first_name", "status", "sync_state", "external_id", "last_error"
    )
    print(json.dumps(list(leads)))


def admin() -> None:
    """Staff open crmify's lead list and a lead's page in the site's admin."""
    setup_test_environment()
    User.objects.create_superuser("staff", "staff@example.com", "pw")
    client = Client()
    client.force_login(User.objects.get(username="staff"))
    changelist = client.get("/admin/crmify/lead/")
    lead = Lead.objects.get(email="ada@example.com")
    change = client.get(f"/admin/crmify/lead/{lead.pk}/change/")
    print(json.dumps({"changelist": changelist.status_code, "change": change.status_code}))


if __name__ == "__main__":
    {"sign_up": sign_up, "change": change, "leave": leave, "report": report, "admin": admin}[
        sys.argv[1]
    ]()
