"""Run inside a copy of the project whose Post and User gained (``added``) or lost (``removed``) a field.

Post: ``summary``; User: ``display_name`` (both optional strings).

Calls every gRPC RPC through a real channel, the REST API and the admin, and
asserts what a client sees; exits non-zero on the first difference.
"""

from __future__ import annotations

import os
import sys
import uuid

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
django.setup()

import grpc  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from google.protobuf import field_mask_pb2  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402
from rest_framework_simplejwt.tokens import AccessToken  # noqa: E402

from grpc_ext.server.transport import serve_in_background  # noqa: E402
from posts.models import Post  # noqa: E402
from protos import posts_pb2, posts_pb2_grpc, users_pb2, users_pb2_grpc  # noqa: E402
from users.models import User  # noqa: E402
from users.services import user_create  # noqa: E402


def check_added(stub, metadata, user, api: APIClient, admin: Client) -> None:
    created = stub.Create(posts_pb2.PostCreateRequest(title="t", summary="s1"), metadata=metadata)
    assert created.summary == "s1", created
    assert Post.objects.get(pk=created.id).summary == "s1"
    updated = stub.Update(posts_pb2.PostUpdateRequest(id=created.id, title="t2", summary="s2"), metadata=metadata)
    assert (updated.title, updated.summary) == ("t2", "s2"), updated
    mask = field_mask_pb2.FieldMask(paths=["summary"])
    request = posts_pb2.PostPartialUpdateRequest(id=created.id, title="ignored", summary="s3", update_mask=mask)
    patched = stub.PartialUpdate(request, metadata=metadata)
    assert (patched.title, patched.summary) == ("t2", "s3"), patched
    assert stub.Retrieve(posts_pb2.PostRetrieveRequest(id=created.id), metadata=metadata).summary == "s3"
    page = stub.List(posts_pb2.PostListRequest(owner=str(user.pk)), metadata=metadata)
    assert [post.summary for post in page.posts] == ["s3"], page
    streamed = [
        post.summary for batch in stub.Stream(posts_pb2.PostStreamRequest(), metadata=metadata) for post in batch.posts
    ]
    assert streamed == ["s3"], streamed

    response = api.post("/api/posts/", {"title": "rest", "summary": "r1"}, format="json")
    assert response.status_code == 201 and response.json()["summary"] == "r1", response.content
    url = f"/api/posts/{response.json()['id']}/"
    response = api.put(url, {"title": "rest", "summary": "r2"}, format="json")
    assert response.status_code == 200 and response.json()["summary"] == "r2", response.content
    response = api.patch(url, {"summary": "r3"}, format="json")
    assert response.status_code == 200 and response.json()["summary"] == "r3", response.content
    assert api.get(url).json()["summary"] == "r3"
    assert Post.objects.get(title="rest").summary == "r3"

    assert 'name="summary"' in admin.get("/admin/posts/post/add/").content.decode()
    form = {"owner": str(user.pk), "title": "admin", "description": "", "summary": "a1"}
    response = admin.post("/admin/posts/post/add/", form)
    assert response.status_code == 302, response.content[:2000]
    post = Post.objects.get(title="admin")
    assert post.summary == "a1"
    response = admin.post(f"/admin/posts/post/{post.pk}/change/", {**form, "summary": "a2"})
    assert response.status_code == 302, response.content[:2000]
    assert Post.objects.get(pk=post.pk).summary == "a2"


def check_user_added(channel, metadata, user, api: APIClient, admin: Client) -> None:
    users = users_pb2_grpc.UserControllerStub(channel)
    request = users_pb2.UserCreateRequest(email="new@example.com", password="a-long-passphrase", display_name="Ada")
    created = users.Create(request)
    assert created.display_name == "Ada" and User.objects.get(pk=created.id).display_name == "Ada"
    mask = field_mask_pb2.FieldMask(paths=["display_name"])
    patched = users.PartialUpdate(
        users_pb2.UserPartialUpdateRequest(id=created.id, display_name="Lovelace", update_mask=mask), metadata=metadata
    )
    assert patched.display_name == "Lovelace", patched
    listed = users.List(users_pb2.UserListRequest(email="new@example.com"), metadata=metadata)
    assert [found.display_name for found in listed.users] == ["Lovelace"]

    response = api.post(
        "/api/users/signup/", {"email": "rest@example.com", "password": "a-long-passphrase", "display_name": "R"}
    )
    assert response.status_code == 201 and response.json()["display_name"] == "R", response.content
    assert User.objects.get(email="rest@example.com").display_name == "R"

    page = admin.get(f"/admin/users/user/{created.id}/change/").content.decode()
    assert 'name="display_name"' in page
    form = {"email": "admin-made@example.com", "password1": "a-long-passphrase", "password2": "a-long-passphrase"}
    response = admin.post("/admin/users/user/add/", {**form, "display_name": "Grace"})
    assert response.status_code == 302, response.content[:2000]
    assert User.objects.get(email="admin-made@example.com").display_name == "Grace"


def check_removed(stub, metadata, user, api: APIClient, admin: Client) -> None:
    for message in (posts_pb2.Post, posts_pb2.PostCreateRequest, posts_pb2.PostUpdateRequest):
        assert "summary" not in message.DESCRIPTOR.fields_by_name, message
    proto = open("protos/posts.proto").read()
    assert proto.count('"summary"') >= 4, proto  # reserved in Post and the three write requests
    created = stub.Create(posts_pb2.PostCreateRequest(title="t"), metadata=metadata)
    assert stub.Retrieve(posts_pb2.PostRetrieveRequest(id=created.id), metadata=metadata).title == "t"
    assert not hasattr(Post(), "summary")
    response = api.post("/api/posts/", {"title": "rest", "summary": "ignored"}, format="json")
    assert response.status_code == 201 and "summary" not in response.json(), response.content
    assert 'name="summary"' not in admin.get("/admin/posts/post/add/").content.decode()
    form = {"owner": str(user.pk), "title": "admin", "description": ""}
    assert admin.post("/admin/posts/post/add/", form).status_code == 302


def main(mode: str) -> None:
    setup_test_environment()
    user = user_create(email=f"{uuid.uuid4().hex[:8]}@example.com", password="a-long-passphrase")
    user.is_staff = user.is_superuser = True
    user.save()
    token = str(AccessToken.for_user(user))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    admin = Client()
    admin.force_login(user)
    server = serve_in_background("127.0.0.1:0", max_workers=4)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = posts_pb2_grpc.PostControllerStub(channel)
            metadata = [("authorization", f"Bearer {token}")]
            {"added": check_added, "removed": check_removed}[mode](stub, metadata, user, api, admin)
            if mode == "added":
                check_user_added(channel, metadata, user, api, admin)
            else:
                assert "display_name" not in users_pb2.User.DESCRIPTOR.fields_by_name
                assert 'name="display_name"' not in admin.get(f"/admin/users/user/{user.pk}/change/").content.decode()
    finally:
        server.stop(None).wait()
    print(f"{mode}: ok")


if __name__ == "__main__":
    main(sys.argv[1])
