"""Alembic migrations of the hub's schema; ``hub.migrate`` runs them."""
