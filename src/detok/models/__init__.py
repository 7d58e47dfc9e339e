"""Model families. Importing this package registers every preset."""

from detok.models import ar, detok, dit, lightningdit, mar  # noqa: F401
