"""The User message: what a client may read and write, declared once.

``generateproto`` builds ``protos/users.proto`` from this class: readable
fields go into ``User``, writable and write-only ones into the request
messages. The password is write-only, so no response carries it.
"""

from grpc_ext.serializers import ModelProtoSerializer
from users.models import User
from users.services import user_create, user_update


class UserProtoSerializer(ModelProtoSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "password", "is_active", "is_verified", "is_staff", "is_superuser", "date_joined"]
        read_only_fields = ["id", "is_active", "is_verified", "is_staff", "is_superuser", "date_joined"]
        # List filter: `email`, the whole address, case-insensitive.
        list_filters = {"email": "iexact"}
        ordering_fields = ["date_joined", "email"]
        extra_kwargs = {"password": {"write_only": True, "style": {"input_type": "password"}}}
        create_function = user_create
        update_function = user_update

    def get_fields(self):
        """Require the password to sign up; on Update, one not given leaves the password as it is."""
        fields = super().get_fields()
        fields["password"].required = self.instance is None
        return fields
