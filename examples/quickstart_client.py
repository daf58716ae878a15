"""A client of the demo on ``grpc_ext.client``: sign up, log in, write, read, page, stream, and a refused write.

Run from the project root while ``python3 dev.py serve`` is running::

    .venv/bin/python -m examples.quickstart_client [ADDRESS]
"""

import sys
import uuid

from grpc_ext.client import Client, ClientError


def main(address: str = "127.0.0.1:50051") -> None:
    with Client(address, timeout=5.0) as client:  # TLS: Client(address, root_certificates=...)
        # Signup is open; after login every call carries the access token, refreshed as it nears expiry.
        email, password = f"{uuid.uuid4().hex[:8]}@example.com", "a-long-passphrase"
        user = client.users.Create(email=email, password=password)
        client.login(email, password)

        post = client.posts.Create(title="Hello", description="From Python")  # fields as keywords
        print("post:", client.posts.Retrieve(id=post.id).title)
        renamed = client.posts.PartialUpdate(id=post.id, description="Renamed")  # update_mask: description
        print("renamed:", renamed.title, "/", renamed.description)

        print("user:", client.users.Retrieve(id=user.id).email)
        print("users:", [u.email for u in client.users.iterate(page_size=100)])  # every page
        print("my posts:", [p.title for p in client.posts.iterate(page_size=100, owner="me")])
        print("posts streamed:", sum(1 for _ in client.posts.stream()))  # Stream's batches, flattened

        try:
            client.posts.Create(title="")
        except ClientError as error:
            print("refused:", error.code.name, error.field_violations)  # INVALID_ARGUMENT {'title': [...]}

        client.logout()


if __name__ == "__main__":
    main(*sys.argv[1:])
