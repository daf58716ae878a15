"""gRPC transport for posts: ``posts.PostController``."""

from grpc_ext.generics import ModelService
from grpc_ext.permissions import IsAuthenticated
from posts.permissions import IsOwnerOrStaff
from posts.selectors import post_list
from posts.serializers import PostProtoSerializer
from protos import posts_pb2

#: ``PostListRequest.owner`` value that means the caller.
OWNER_ME = "me"


class PostService(ModelService):
    serializer_class = PostProtoSerializer
    permission_classes = [IsAuthenticated, IsOwnerOrStaff]

    def get_queryset(self):
        return post_list()

    def filter_list_queryset(self, queryset, request):
        """Read ``owner: "me"`` as the caller's own id, so a client can list its posts without knowing it."""
        if request.owner == OWNER_ME:
            narrowed = posts_pb2.PostListRequest()
            narrowed.CopyFrom(request)
            narrowed.owner = str(self.user.pk)
            request = narrowed
        return super().filter_list_queryset(queryset, request)

    def get_create_values(self) -> dict:
        """Make the caller the owner of each new post (Create and BatchCreate)."""
        return {"owner": self.user}
