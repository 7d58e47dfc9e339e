"""Model families. Importing this package registers every preset."""

from detok.models import detok  # noqa: F401
