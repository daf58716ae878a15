from django.apps import AppConfig


class TypesAppConfig(AppConfig):
    """A test-only app whose model has every field type the proto generator maps."""

    name = "tests.support.typesapp"
    label = "typesapp"
    default_auto_field = "django.db.models.BigAutoField"
