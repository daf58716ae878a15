"""Many rows validated and inserted at once, for a project's batch writes.

The public names of ``grpc_ext.wire.bulk``, kept at ``grpc_ext.bulk`` where a project imports them.
"""

from grpc_ext.wire.bulk import ItemValidationError, has_model_rules, insert_many, new_instances, validate_each

__all__ = ["ItemValidationError", "has_model_rules", "insert_many", "new_instances", "validate_each"]
