"""What the write RPCs keep in the database: entity tags (AIP-154) and remembered request ids (AIP-155)."""

from __future__ import annotations

import random

from django.db import models

#: Name of the concurrency-token column of an ``ETagModel`` and of the ``etag`` message field.
ETAG_FIELD = "etag"


def new_etag() -> str:
    """Return a fresh random entity tag: unlike a timestamp it differs even for two writes in one clock tick.

    64 random bits from the process's generator (reseeded in every forked
    process): a tag must not repeat, not be secret, and ``os.urandom`` would
    cost a system call per row of a batch.
    """
    return f"{random.getrandbits(64):016x}"


def has_etag(model: type[models.Model]) -> bool:
    """Tell whether ``model`` keeps an entity tag (inherits ``ETagModel``)."""
    return issubclass(model, ETagModel)


class ETagModel(models.Model):
    """A model whose rows carry an entity tag that changes with every ``save()``.

    A random token rather than a counter: two concurrent writes that do not
    check the tag each write their own token, so a tag a client holds always
    names exactly one state of the row. ``QuerySet.update()`` does not call
    ``save()``; set ``etag=new_etag()`` there too. ``bulk_create`` gets a fresh
    tag per row from the default.
    """

    etag = models.CharField(max_length=32, default=new_etag, editable=False)

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        self.etag = new_etag()
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and ETAG_FIELD not in update_fields:
            kwargs["update_fields"] = [*update_fields, ETAG_FIELD]
        super().save(*args, **kwargs)


class IdempotencyRecord(models.Model):
    """The response of a write made with a client's request id, so that a retry returns it instead of writing again.

    ``caller`` scopes ids per caller (``user:<pk>``; ``anonymous`` for calls
    without credentials), ``fingerprint`` is a keyed hash (HMAC with
    ``SECRET_KEY``) of the method and the request, so that a password in a
    signup request is never stored in a form open to an offline guess. The
    unique constraint makes concurrent duplicates write once: the record is
    inserted in the write's own transaction, and the loser of the race fails on
    it, rolls back its write and answers with the winner's response.
    """

    caller = models.CharField(max_length=64)
    request_id = models.CharField(max_length=160)  # a UUID, or "rest:" and an Idempotency-Key
    fingerprint = models.CharField(max_length=64)
    response = models.BinaryField()
    created = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["caller", "request_id"], name="idempotency_caller_request_id_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.caller} {self.request_id}"
