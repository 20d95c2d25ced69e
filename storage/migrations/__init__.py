"""Alembic migrations of mtl-tune's own tables; run them with ``mtl-tune db upgrade``."""
