"""The Post message, declared once: ``generateproto`` builds ``protos/posts.proto`` from it."""

from grpc_ext.serializers import ModelProtoSerializer
from posts.models import Post
from posts.services import post_create, post_create_many, post_update


class PostProtoSerializer(ModelProtoSerializer):
    class Meta:
        model = Post
        fields = ["id", "owner", "title", "description", "created", "updated"]
        # The owner is the caller, set by the service; a client cannot choose it.
        read_only_fields = ["id", "owner", "created", "updated"]
        # List filters: `owner` (a user id, exact) and `title_contains` (case-insensitive).
        list_filters = {"owner": "exact", "title": "icontains"}
        ordering_fields = ["created", "updated", "title"]
        # A full update (gRPC Update, REST PUT) that leaves description out resets it.
        extra_kwargs = {"description": {"default": ""}}
        create_function = post_create
        update_function = post_update

    def create_many(self, validated_data_list: list[dict]) -> list[Post]:
        """Create a batch in bulk (BatchCreate)."""
        return post_create_many(items=validated_data_list, checked_fields=self.model_checked_fields())
