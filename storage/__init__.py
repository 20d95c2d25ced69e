"""Engines, sessions, Optuna storage and the project's own tables; the one place that builds them."""
