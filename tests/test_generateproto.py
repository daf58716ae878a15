"""The committed protos and stubs are what generateproto produces from the serializers now."""

from __future__ import annotations

import importlib

import pytest
from django.core.management import CommandError, call_command
from rest_framework import serializers

from grpc_ext.contract.protogen import ContractError, ProtoContract, parse_proto
from grpc_ext.wire.serializers import ModelProtoSerializer
from posts.models import Post
from tests.support.typesapp.serializers import SAMPLE_FIELDS, SampleProtoSerializer
from users.models import User


def test_committed_protos_and_stubs_are_up_to_date():
    call_command("generateproto", "--check")


def test_check_fails_and_shows_a_diff_when_a_committed_file_drifted(settings, tmp_path, capsys):
    for path in (settings.BASE_DIR / "protos").iterdir():
        if path.is_file():
            (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "posts.proto").write_text((tmp_path / "posts.proto").read_text().replace("title", "headline"))
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "PROTO_DIR": str(tmp_path)}
    with pytest.raises(CommandError, match="posts.proto"):
        call_command("generateproto", "--check")
    assert "-  string headline = 3;" in capsys.readouterr().out


def test_generated_grpc_module_imports_its_pb2_from_the_protos_package():
    module = importlib.import_module("protos.posts_pb2_grpc")
    assert module.protos_dot_posts__pb2 is importlib.import_module("protos.posts_pb2")


# Stable field numbers: each scenario renders a contract from one serializer,
# then again from a changed one with the first file as the .proto on disk.


def post_serializer(fields: list[str], **declared_fields) -> type[ModelProtoSerializer]:
    meta = type("Meta", (), {"model": Post, "fields": fields, "read_only_fields": ["id", "created", "updated"]})
    return type("PostProtoSerializer", (ModelProtoSerializer,), {"Meta": meta, **declared_fields})


def render(fields: list[str], previous: str | None = None, **declared_fields) -> str:
    return ProtoContract(package="drafts", serializer_class=post_serializer(fields, **declared_fields)).render(previous)


def numbers(text: str, message: str) -> dict[str, int]:
    return {name: number for name, (number, _) in parse_proto(text)[message].fields.items()}


def reserved(text: str, message: str) -> tuple[set[int], set[str]]:
    parsed = parse_proto(text)[message]
    return parsed.reserved_numbers, parsed.reserved_names


V1 = ["id", "owner", "title", "description", "created"]


def test_a_field_added_in_the_middle_takes_the_next_number_and_the_rest_keep_theirs():
    before = render(["id", "owner", "title", "created"])
    after = render(["id", "owner", "description", "title", "created"], previous=before)

    # etag (AIP-154) and request_id (AIP-155) are the framework's, numbered after the first fields.
    assert numbers(after, "Post") == {"id": 1, "owner": 2, "title": 3, "created": 4, "etag": 5, "description": 6}
    assert numbers(after, "PostCreateRequest") == {"owner": 1, "title": 2, "request_id": 3, "description": 4}
    assert numbers(after, "PostPartialUpdateRequest") == {
        "id": 1,
        "owner": 2,
        "title": 3,
        "update_mask": 4,
        "etag": 5,
        "description": 6,
    }
    assert "reserved" not in after


def test_a_removed_field_is_reserved_and_its_number_never_reused():
    before = render(V1)
    removed = render(["id", "owner", "title", "created"], previous=before)
    added_later = render(["id", "owner", "title", "created", "updated"], previous=removed)

    assert numbers(removed, "Post") == {"id": 1, "owner": 2, "title": 3, "created": 5, "etag": 6}
    assert reserved(removed, "Post") == ({4}, {"description"})
    assert reserved(removed, "PostUpdateRequest") == ({4}, {"description"})
    assert numbers(added_later, "Post")["updated"] == 7
    assert reserved(added_later, "Post") == ({4}, {"description"})


def test_a_removed_name_cannot_come_back():
    removed = render(["id", "owner", "title", "created"], previous=render(V1))
    with pytest.raises(ContractError, match=r"drafts.Post.description was removed earlier"):
        render(V1, previous=removed)


def test_a_rename_is_a_removal_plus_an_addition():
    headline = serializers.CharField(source="title", max_length=100)
    after = render(["id", "owner", "headline", "description", "created"], previous=render(V1), headline=headline)

    assert numbers(after, "Post") == {"id": 1, "owner": 2, "description": 4, "created": 5, "etag": 6, "headline": 7}
    assert reserved(after, "Post") == ({3}, {"title"})
    assert numbers(after, "PostCreateRequest") == {"owner": 1, "description": 3, "request_id": 4, "headline": 5}
    assert reserved(after, "PostCreateRequest") == ({2}, {"title"})


def test_reordering_fields_changes_nothing():
    before = render(V1)
    assert render(list(reversed(V1)), previous=before) == before


def test_a_changed_type_is_refused():
    before = render([*V1, "rank"], rank=serializers.IntegerField(read_only=True))
    with pytest.raises(ContractError, match="drafts.Post.rank would change type from int64 to string"):
        render([*V1, "rank"], previous=before, rank=serializers.CharField(read_only=True))


def test_a_nullable_field_becoming_required_keeps_its_number():
    before = render([*V1, "rank"], rank=serializers.IntegerField(allow_null=True))
    after = render([*V1, "rank"], previous=before, rank=serializers.IntegerField())

    assert "optional int64 rank = 6;" in before and "  int64 rank = 6;" in after


def test_a_readable_secret_is_refused():
    meta = type("Meta", (), {"model": User, "fields": ["id", "email", "password"]})
    serializer_class = type("LeakyUserSerializer", (ModelProtoSerializer,), {"Meta": meta})
    with pytest.raises(ContractError, match="would send password in every User response"):
        ProtoContract(package="leaky", serializer_class=serializer_class).render()


def test_one_off_proto_makes_secrets_write_only_and_keeps_numbers_when_overwritten(tmp_path):
    target = tmp_path / "accounts.proto"
    for fields in ("id,email,password", "id,is_staff,password,email"):
        call_command("generateproto", "--model", "users.models.User", "--fields", fields, "--file", str(target))
    text = target.read_text()

    assert "password" not in text.split("message User {")[1].split("}")[0]
    assert numbers(text, "User") == {"id": 1, "email": 2, "etag": 3, "is_staff": 4}
    assert numbers(text, "UserCreateRequest") == {"email": 1, "password": 2, "request_id": 3, "is_staff": 4}


class DraftV1(ModelProtoSerializer):
    class Meta:
        model = Post
        proto_class = "protos.drafts_pb2.Post"
        fields = ["id", "owner", "title", "created"]
        read_only_fields = ["id", "created"]


class DraftV2(ModelProtoSerializer):
    class Meta:
        model = Post
        proto_class = "protos.drafts_pb2.Post"
        fields = ["id", "owner", "description", "title", "created"]
        read_only_fields = ["id", "created"]


def test_check_fails_on_model_drift_and_passes_after_regenerating(settings, tmp_path, capsys, monkeypatch):
    import grpc_ext.management.commands.generateproto as command

    def configure(serializer: type[ModelProtoSerializer]) -> None:
        settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "PROTO_DIR": str(tmp_path), "STATIC_PROTOS": []}
        contract = ProtoContract(package="drafts", serializer_class=serializer)
        monkeypatch.setattr(command, "project_contracts", lambda: [contract])

    configure(DraftV1)
    call_command("generateproto")
    out = capsys.readouterr().out
    written = [line for line in out.splitlines() if line.startswith(f"Wrote {tmp_path}/")]
    assert len(written) == len(list(tmp_path.iterdir())) > 1  # the proto and its stubs
    assert f"Wrote {len(written)} files: 1 proto(s) and their stubs." in out  # what it wrote, not what it read
    first = (tmp_path / "drafts.proto").read_text()
    configure(DraftV2)

    with pytest.raises(CommandError, match="drafts.proto, drafts_pb2.py"):
        call_command("generateproto", "--check")
    assert "+  optional string description = 4;" in capsys.readouterr().out
    assert (tmp_path / "drafts.proto").read_text() == first

    call_command("generateproto")
    call_command("generateproto", "--check")
    after = (tmp_path / "drafts.proto").read_text()
    assert numbers(after, "Post") == {**numbers(first, "Post"), "description": 6}
    assert "description" in (tmp_path / "drafts_pb2.py").read_text()


def test_regenerating_every_field_type_over_its_own_output_changes_nothing():
    """The parser reads back every form the renderer writes: labels, well-known types, choice comments."""
    contract = ProtoContract(package="samples", serializer_class=SampleProtoSerializer)
    first = contract.render()

    assert "string status = 10;  // one of: draft, published" in first
    assert contract.render(first) == first
    assert len(parse_proto(first)["Sample"].fields) == len(SAMPLE_FIELDS) - 1


def test_hand_written_protos_are_compiled_with_the_generated_ones(settings, tmp_path):
    """Editing protos/auth.proto without regenerating leaves its stubs stale, and --check says so."""
    for path in (settings.BASE_DIR / "protos").iterdir():
        if path.is_file():
            (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "auth.proto").write_text((tmp_path / "auth.proto").read_text().replace("Logout", "SignOut"))
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "PROTO_DIR": str(tmp_path)}
    with pytest.raises(CommandError, match="auth_pb2"):
        call_command("generateproto", "--check")


def test_a_missing_hand_written_proto_is_a_command_error(settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "STATIC_PROTOS": ["missing.proto"]}
    with pytest.raises(CommandError, match="missing.proto"):
        call_command("generateproto", "--check")


def test_a_writable_primary_key_stays_out_of_the_request_fields():
    """The key names the object acted on; as a writable field too it would be declared twice."""
    text = render(V1, id=serializers.UUIDField())
    assert numbers(text, "PostUpdateRequest") == {"id": 1, "owner": 2, "title": 3, "description": 4, "etag": 5}
    assert "id" not in numbers(text, "PostCreateRequest")


def test_one_off_with_a_field_the_model_lacks_is_a_command_error():
    with pytest.raises(CommandError, match="Field name `nope` is not valid for model `Post`"):
        call_command("generateproto", "--model", "posts.models.Post", "--fields", "id,nope")


def test_the_proto_on_disk_is_read_by_the_compiler_whatever_its_layout():
    """Comments, one-line messages, ranges and nested types: protoc's descriptor set says what is declared."""
    text = """
    syntax = "proto3";
    package drafts;
    import "google/protobuf/timestamp.proto";
    /* a block comment: message Fake { string nope = 9; } */
    message Post { string id = 1; // trailing comment
      repeated   Post children=7; google.protobuf.Timestamp created = 5;
      reserved 2 to 4, 9; reserved "old_title";
      message Inner { int32 x = 1; }
    }
    """
    parsed = parse_proto(text)
    assert set(parsed) == {"Post"}
    post = parsed["Post"]
    assert post.fields == {
        "id": (1, "string"),
        "children": (7, "repeated Post"),
        "created": (5, "google.protobuf.Timestamp"),
    }
    assert post.reserved_numbers == {2, 3, 4, 9} and post.reserved_names == {"old_title"}


def test_a_proto_on_disk_that_does_not_compile_is_a_contract_error():
    with pytest.raises(ContractError, match="does not compile"):
        parse_proto('syntax = "proto3";\nmessage Post { string id = ; }\n')


def test_batch_create_request_id_and_etag_are_generated_for_every_model_with_stable_numbers():
    """BatchCreate (AIP-233), request_id (AIP-155) and etag (AIP-154) come from the serializer alone."""
    first = render(V1)
    assert "rpc BatchCreate(PostBatchCreateRequest) returns (PostBatchCreateResponse);" in first
    assert numbers(first, "PostBatchCreateRequest") == {"requests": 1, "request_id": 2}
    assert parse_proto(first)["PostBatchCreateRequest"].fields["requests"] == (1, "repeated PostCreateRequest")
    assert parse_proto(first)["PostBatchCreateResponse"].fields == {"posts": (1, "repeated Post")}
    assert numbers(first, "PostCreateRequest") == {"owner": 1, "title": 2, "description": 3, "request_id": 4}
    assert numbers(first, "PostDestroyRequest") == {"id": 1, "etag": 2}
    assert numbers(first, "Post")["etag"] == 6

    later = render([*V1, "updated"], previous=first)
    assert numbers(later, "PostCreateRequest")["request_id"] == 4
    assert numbers(later, "Post") == {**numbers(first, "Post"), "updated": 7}
    assert render([*V1, "updated"], previous=later) == later


def test_a_model_without_etags_gets_no_etag_fields():
    contract = ProtoContract(package="types", serializer_class=SampleProtoSerializer)
    text = contract.render()
    assert "etag" not in text
    assert "rpc BatchCreate(SampleBatchCreateRequest)" in text and "string request_id" in text
