"""Create a few demo users and posts, so that a new user sees something at once."""

from django.core.management.base import BaseCommand

from posts.services import post_create
from users.models import User
from users.services import user_create

DEMO_PASSWORD = "demo-password-123"
DEMO_USERS = {
    "ada@example.com": ["Notes on the analytical engine", "On Bernoulli numbers"],
    "grace@example.com": ["Finding the first bug", "Why COBOL reads like English", "Nanoseconds, by the foot"],
    "alan@example.com": ["Computing machinery and intelligence"],
}


class Command(BaseCommand):
    help = f"Create demo users (password {DEMO_PASSWORD!r}) with a few posts each; safe to run twice."

    def handle(self, *args, **options):
        created = 0
        for email, titles in DEMO_USERS.items():
            if User.objects.filter(email=email).exists():
                continue
            owner = user_create(email=email, password=DEMO_PASSWORD, is_verified=True)
            for title in titles:
                post_create(owner=owner, title=title, description=f"A demo post by {email}.")
            created += 1
        self.stdout.write(self.style.SUCCESS(f"Demo data ready: {created} new user(s), password {DEMO_PASSWORD!r}."))
