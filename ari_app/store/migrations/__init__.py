"""Alembic migrations of the interaction store (run by ``InteractionStore.upgrade``)."""
