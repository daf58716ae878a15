"""Register every gRPC service of the project on a server."""

from posts.servicers import PostService
from protos import auth_pb2_grpc, posts_pb2_grpc, users_pb2_grpc
from users.servicers import AuthService, UserService


def grpc_handlers(server) -> None:
    """Add the project's servicers to ``server`` (djangogrpcframework's ROOT_HANDLERS_HOOK)."""
    users_pb2_grpc.add_UserControllerServicer_to_server(UserService.as_servicer(), server)
    posts_pb2_grpc.add_PostControllerServicer_to_server(PostService.as_servicer(), server)
    auth_pb2_grpc.add_AuthControllerServicer_to_server(AuthService.as_servicer(), server)
