"""One model with every field type the generator maps, each in the shape that matters on the wire."""

import uuid

from django.conf import settings
from django.db import models


class Sample(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        PUBLISHED = "published"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    name = models.CharField(max_length=50)
    nickname = models.CharField(max_length=50, null=True, blank=True)
    count = models.IntegerField(default=7)
    big = models.BigIntegerField(default=0)
    ratio = models.FloatField(null=True, blank=True)
    price = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    flag = models.BooleanField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    happened_at = models.DateTimeField(null=True, blank=True)
    payload = models.JSONField(null=True, blank=True)
    reference = models.UUIDField(null=True, blank=True)
    api_token = models.CharField(max_length=64, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "id"]
