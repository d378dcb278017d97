from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from shop import views

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(template_name="shop/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("email-link/<int:user_id>/", views.email_link, name="email-link"),
    path("purchase/", views.purchase, name="purchase"),
    path("admin/", admin.site.urls),
]
