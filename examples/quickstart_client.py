"""A gRPC client of the demo: sign up, log in, create a post, then list and retrieve.

Run from the project root while ``python3 dev.py serve`` is running::

    .venv/bin/python -m examples.quickstart_client [ADDRESS]
"""

import sys
import uuid

import grpc

from protos import auth_pb2, auth_pb2_grpc, posts_pb2, posts_pb2_grpc, users_pb2, users_pb2_grpc


def main(address: str = "127.0.0.1:50051") -> None:
    with grpc.insecure_channel(address) as channel:
        auth = auth_pb2_grpc.AuthControllerStub(channel)
        users = users_pb2_grpc.UserControllerStub(channel)
        posts = posts_pb2_grpc.PostControllerStub(channel)

        # Signup is open; every other call carries the access token from Login.
        email, password = f"{uuid.uuid4().hex[:8]}@example.com", "a-long-passphrase"
        user = users.Create(users_pb2.UserCreateRequest(email=email, password=password))
        tokens = auth.Login(auth_pb2.LoginRequest(email=email, password=password))
        metadata = [("authorization", f"Bearer {tokens.access}")]

        post = posts.Create(posts_pb2.PostCreateRequest(title="Hello", description="From gRPC"), metadata=metadata)

        page = users.List(users_pb2.UserListRequest(page_size=10), metadata=metadata)
        print("users:", [u.email for u in page.users])
        print("user:", users.Retrieve(users_pb2.UserRetrieveRequest(id=user.id), metadata=metadata).email)

        page = posts.List(posts_pb2.PostListRequest(page_size=10, owner="me"), metadata=metadata)
        print("my posts:", [p.title for p in page.posts])
        print("post:", posts.Retrieve(posts_pb2.PostRetrieveRequest(id=post.id), metadata=metadata).title)


if __name__ == "__main__":
    main(*sys.argv[1:])
