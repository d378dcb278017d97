"""The seed README's two use cases as pages: sign-up creates a lead; the e-mail link marks it contacted;
a purchase converts it."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from crmify import api
from crmify.models import Lead


class SignupForm(UserCreationForm):  # type: ignore[type-arg]
    email = forms.EmailField(required=True)
    first_name = forms.CharField(required=False)

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email", "first_name")


def home(request: HttpRequest) -> HttpResponse:
    lead = api.lead_for(request.user) if request.user.is_authenticated else None
    recent = Lead.objects.order_by("-created_at")[:10]
    return render(request, "shop/home.html", {"lead": lead, "recent": recent})


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()  # crmify's receiver records the lead; the worker creates it in the CRM
        login(request, user)
        messages.success(request, "Welcome! Your lead is on its way to the CRM.")
        return redirect("home")
    return render(request, "shop/signup.html", {"form": form})


def email_link(request: HttpRequest, user_id: int) -> HttpResponse:
    """The link a CRM e-mail would carry: clicking it moves the lead to "Contacted"."""
    user = get_object_or_404(User, pk=user_id)
    api.set_status(user, "Contacted")
    messages.success(request, f"Thanks {user.username}: your lead is now Contacted.")
    return redirect("home")


@login_required
@require_POST
def purchase(request: HttpRequest) -> HttpResponse:
    api.mark_converted(request.user)
    messages.success(request, "Thank you for your purchase: your lead is converted.")
    return redirect("home")
