from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from users.models import User

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


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["-date_joined"]
    list_display = ["email", "is_active", "is_verified", "is_staff", "date_joined"]
    list_filter = ["is_active", "is_verified", "is_staff", "is_superuser"]
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
