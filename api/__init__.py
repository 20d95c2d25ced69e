"""The HTTP face of mtl-tune: a FastAPI app and its dashboard. Never imports torch."""
