from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm

from users.models import User
from users.services import user_create, user_update

#: Fields the admin shows in its own sections; any other editable field of the model goes in "Other".
LISTED_FIELDS = {
    "email",
    "password",
    "is_active",
    "is_verified",
    "is_staff",
    "is_superuser",
    "groups",
    "user_permissions",
    "date_joined",
    "last_login",
}
# The password changes on its own admin page (validated, hashed), never through the change form;
# groups and permissions (many-to-many) are saved by the admin after save_model.
NOT_THROUGH_THE_SERVICE = {"password"}


class EmailNormalizingMixin:
    """Store emails as every transport does, so the form's uniqueness check is case-insensitive too."""

    cleaned_data: dict[str, Any]

    def clean_email(self) -> str:
        return User.objects.normalize_email(self.cleaned_data.get("email"))


class UserCreationForm(EmailNormalizingMixin, AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):
        model = User
        fields = ("email",)


class UserChangeAdminForm(EmailNormalizingMixin, UserChangeForm):
    class Meta(UserChangeForm.Meta):
        model = User
        fields = "__all__"


def model_fields(cleaned_data: dict[str, Any]) -> dict[str, Any]:
    """The form's values of the user's own columns, as the domain services take them."""
    columns = {field.name for field in User._meta.concrete_fields} - NOT_THROUGH_THE_SERVICE
    return {name: value for name, value in cleaned_data.items() if name in columns}


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    form = UserChangeAdminForm
    add_form = UserCreationForm
    ordering = ["-date_joined"]
    list_display = ["email", "is_active", "is_verified", "is_staff", "date_joined"]
    list_filter = ["is_active", "is_verified", "is_staff", "is_superuser"]
    # Also what the Post owner autocomplete searches.
    search_fields = ["email"]
    readonly_fields = ["date_joined", "last_login"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Status", {"fields": ["is_active", "is_verified"]}),
        ("Permissions", {"fields": ["is_staff", "is_superuser", "groups", "user_permissions"]}),
        ("Dates", {"fields": ["date_joined", "last_login"]}),
    ]
    add_fieldsets = [
        (None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]}),
    ]

    def get_fieldsets(self, request, obj=None):
        """Add the model's other editable fields (add and change forms), so that a field added to the model shows."""
        fieldsets = list(super().get_fieldsets(request, obj))
        others = [
            field.name
            for field in User._meta.get_fields()
            if getattr(field, "editable", False)
            and field.concrete
            and field.name not in LISTED_FIELDS
            and field.name != User._meta.pk.name
        ]
        return [*fieldsets, ("Other", {"fields": others})] if others else fieldsets

    def save_model(self, request, obj: User, form, change: bool) -> None:
        """Save through the domain services, as the gRPC and REST APIs do."""
        fields = model_fields(form.cleaned_data)
        if change:
            user_update(obj, **fields)
            return
        # The add form shows no "password-based authentication" switch, so it always sets a password.
        saved = user_create(password=form.cleaned_data["password1"], **fields)
        obj.__dict__.update({name: value for name, value in saved.__dict__.items() if name != "_state"})
        obj._state.adding, obj._state.db = False, saved._state.db
