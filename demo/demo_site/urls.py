from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpResponse
from django.urls import include, path

from shop import views

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(template_name="shop/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("email-link/<str:token>/", views.email_link, name="email-link"),
    path("purchase/", views.purchase, name="purchase"),
    path("admin/", admin.site.urls),
    # The CRM's webhooks: a salesperson's changes come back here (crmify.urls).
    path("crm/", include("crmify.urls")),
    # The admin's pages have no icon link, so browsers ask for this one; no icon, and no 404 either.
    path("favicon.ico", lambda request: HttpResponse(status=204)),
]
