"""The Django admin lists, searches and filters users and posts."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.support.factories import make_post, make_user


@pytest.fixture
def admin_user(db):
    return make_user(email="admin@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_post_changelist_searches_by_title_and_owner(staff_client):
    owner = make_user(email="writer@example.com")
    make_post(owner=owner, title="Findable title")
    make_post(title="Something else")
    response = staff_client.get(reverse("admin:posts_post_changelist"), {"q": "findable"})
    assert response.status_code == 200
    assert b"Findable title" in response.content and b"Something else" not in response.content
    response = staff_client.get(reverse("admin:posts_post_changelist"), {"q": "writer@"})
    assert b"Findable title" in response.content


def test_user_changelist_filters_by_staff_and_hides_the_password_hash(staff_client, admin_user):
    plain = make_user(email="plain@example.com")
    response = staff_client.get(reverse("admin:users_user_changelist"), {"is_staff__exact": "0"})
    assert response.status_code == 200
    assert reverse("admin:users_user_change", args=[plain.pk]).encode() in response.content
    assert reverse("admin:users_user_change", args=[admin_user.pk]).encode() not in response.content
    assert plain.password.encode() not in response.content


def test_post_change_form_renders(staff_client):
    post = make_post()
    assert staff_client.get(reverse("admin:posts_post_change", args=[post.pk])).status_code == 200


def test_seeddemo_creates_users_and_posts_once(db):
    from django.core.management import call_command

    from posts.models import Post
    from users.models import User

    call_command("seeddemo")
    counts = (User.objects.count(), Post.objects.count())
    call_command("seeddemo")
    assert counts == (3, 6)
    assert (User.objects.count(), Post.objects.count()) == counts


def test_post_add_form_creates_the_post_through_the_domain_service(staff_client, admin_user, monkeypatch):
    from posts import admin as posts_admin
    from posts.models import Post

    calls = []
    real_post_create = posts_admin.post_create
    monkeypatch.setattr(posts_admin, "post_create", lambda **fields: calls.append(fields) or real_post_create(**fields))
    response = staff_client.post(
        reverse("admin:posts_post_add"), {"owner": admin_user.pk, "title": "From the admin", "description": ""}
    )
    assert response.status_code == 302, response.content[:500]
    assert calls == [{"owner": admin_user, "title": "From the admin", "description": ""}]
    assert Post.objects.get().title == "From the admin"


def test_user_add_form_creates_the_user_through_the_domain_service_with_a_normalized_email(staff_client):
    from users.models import User

    response = staff_client.post(
        reverse("admin:users_user_add"),
        {"email": " New.Person@Example.COM ", "password1": "a-long-passphrase-1", "password2": "a-long-passphrase-1"},
    )
    created = User.objects.get(email="new.person@example.com")
    assert response.status_code == 302 and response["Location"] == reverse("admin:users_user_change", args=[created.pk])
    assert created.check_password("a-long-passphrase-1")
    # The same address in other letters is taken: the form says so instead of failing on save.
    response = staff_client.post(
        reverse("admin:users_user_add"),
        {"email": "NEW.person@example.com", "password1": "a-long-passphrase-1", "password2": "a-long-passphrase-1"},
    )
    assert response.status_code == 200 and b"already exists" in response.content
    assert User.objects.filter(email__iexact="new.person@example.com").count() == 1


def test_user_change_form_saves_status_and_email(staff_client):
    user = make_user(email="someone@example.com")
    data = {"email": "Someone.Else@Example.com", "is_active": "on", "is_verified": "on", "password": user.password}
    data.update({"date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    response = staff_client.post(reverse("admin:users_user_change", args=[user.pk]), data)
    assert response.status_code == 302, response.content[:1000]
    user.refresh_from_db()
    assert (user.email, user.is_verified, user.is_staff) == ("someone.else@example.com", True, False)


def test_post_owner_autocomplete_finds_users_by_email(staff_client):
    make_user(email="grace.hopper@example.com")
    make_user(email="alan@example.com")
    response = staff_client.get(
        reverse("admin:autocomplete"),
        {"app_label": "posts", "model_name": "post", "field_name": "owner", "term": "grace"},
    )
    assert response.status_code == 200
    assert [result["text"] for result in response.json()["results"]] == ["grace.hopper@example.com"]


def test_the_view_site_link_leads_to_a_page_that_exists(staff_client):
    index = staff_client.get(reverse("admin:index")).content.decode()
    (href,) = re.findall(r'<a href="([^"]+)">View site</a>', index)
    assert href == "/app/"
    assert staff_client.get(href).status_code == 200
