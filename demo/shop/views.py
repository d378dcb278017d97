"""The seed README's two use cases as pages.

"Basic Lead Management": signing up saves a ``UserProfile``, which crmify records as a lead and the worker
creates in the CRM; the link a CRM e-mail would carry moves the lead from "Not Contacted" to "Contacted"
(never back from "Converted": crmify's funnel rule refuses that).
"Basic Sales Funnel": a purchase saves a paid ``Subscription``, whose ``lead_status()`` converts the lead.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.core import signing
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from crmify import api
from crmify.models import Lead
from crmify.tracking import find_lead
from shop.models import Subscription, UserProfile

#: Salt of the signed e-mail link, so a token made for something else cannot be replayed here.
EMAIL_LINK_SALT = "shop.email-link"


class SignupForm(UserCreationForm):  # type: ignore[type-arg]
    email = forms.EmailField(required=True)
    first_name = forms.CharField(required=False)
    last_name = forms.CharField(required=False)
    company = forms.CharField(required=False, max_length=100)

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email", "first_name", "last_name")


class PurchaseForm(forms.Form):
    plan = forms.ChoiceField(choices=UserProfile.Plan.choices, initial=UserProfile.Plan.PLUS)


def email_link_for(profile: UserProfile) -> str:
    """The path the CRM's welcome e-mail would link to: signed, so nobody can contact someone else."""
    token = signing.dumps(profile.pk, salt=EMAIL_LINK_SALT)
    return reverse("email-link", args=[token])


def home(request: HttpRequest) -> HttpResponse:
    profile = UserProfile.objects.filter(user_id=request.user.pk).first()
    context = {
        "profile": profile,
        # find_lead, not api.lead_for: a page view must not start tracking a historic customer.
        "lead": find_lead(profile) if profile else None,
        "email_link": email_link_for(profile) if profile else None,
        "purchase_form": PurchaseForm(),
        "recent": Lead.objects.order_by("-updated_at")[:10],
    }
    return render(request, "shop/home.html", context)


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = form.save()
            # Saving the profile is what crmify listens to: the lead is queued when this commits.
            UserProfile.objects.create(
                user=user, company=form.cleaned_data["company"], signup_source="Website"
            )
        login(request, user)
        messages.success(request, "Welcome! Your lead is on its way to the CRM.")
        return redirect("home")
    return render(request, "shop/signup.html", {"form": form})


def email_link(request: HttpRequest, token: str) -> HttpResponse:
    """The link in the CRM's e-mail: clicking it moves the lead to "Contacted".

    An automatic change never moves a lead back in the funnel: a customer who bought (Converted) and
    follows the link afterwards stays Converted, and crmify records the refused change on the lead.
    """
    try:
        profile_id = signing.loads(token, salt=EMAIL_LINK_SALT)
    except signing.BadSignature:
        raise Http404("This link is not valid.") from None
    profile = get_object_or_404(UserProfile, pk=profile_id)
    lead = api.set_status(profile, "Contacted")
    if lead.status == "Contacted":
        messages.success(request, f"Thanks {profile}: your lead is now Contacted.")
    else:  # the funnel rule refused the step back (recorded on the lead)
        messages.success(request, f"Thanks {profile}: your lead stays {lead.status}.")
    return redirect("home")


@login_required
@require_POST
def purchase(request: HttpRequest) -> HttpResponse:
    profile = get_object_or_404(UserProfile, user_id=request.user.pk)
    form = PurchaseForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a plan.")
        return redirect("home")
    plan = form.cleaned_data["plan"]
    with transaction.atomic():
        profile.plan = plan
        profile.save()
        # The "Conversion event": Subscription.lead_status() converts the lead on save.
        Subscription.objects.create(profile=profile, plan=plan, paid=True)
    messages.success(request, f"Thank you for buying {plan}: your lead is converted.")
    return redirect("home")
