"""``GET /api/problems``: the registered problems a study can name, and the plugins that are broken."""

from __future__ import annotations

from fastapi import APIRouter

from api import catalog
from api.schemas import ProblemList

router = APIRouter(tags=["problems"])


@router.get("/problems")
def list_problems() -> ProblemList:
    return catalog.problems()
