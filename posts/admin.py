from django.contrib import admin

from posts.models import Post
from posts.services import post_create, post_update


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "created", "updated"]
    list_filter = ["created"]
    search_fields = ["title", "description", "owner__email"]
    list_select_related = ["owner"]
    autocomplete_fields = ["owner"]
    readonly_fields = ["created", "updated"]

    def save_model(self, request, obj: Post, form, change: bool) -> None:
        """Save through the domain services, as the gRPC and REST APIs do."""
        columns = {field.name for field in Post._meta.concrete_fields}
        fields = {name: value for name, value in form.cleaned_data.items() if name in columns}
        if change:
            post_update(obj, **fields)
        else:
            saved = post_create(**fields)
            obj.pk, obj.created, obj.updated = saved.pk, saved.created, saved.updated
