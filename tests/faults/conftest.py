"""The fault suite's fixtures: the hub tests' PostgreSQL cluster and notification receivers."""

from tests.integration.hub.conftest import (  # noqa: F401  # fixtures, registered by import
    postgres_cluster,
    postgres_url,
    smtp,
    webhook,
)
