"""``GET /api/problems``: the registered problems a study can name, and the plugins that are broken;
``GET /api/strategies``: the loss-weighting strategies a space can search, with their knobs."""

from __future__ import annotations

from fastapi import APIRouter

from api import catalog
from api.schemas import ProblemList, StrategyInfo

router = APIRouter(tags=["problems"])


@router.get("/problems")
def list_problems() -> ProblemList:
    return catalog.problems()


@router.get("/strategies")
def list_strategies() -> list[StrategyInfo]:
    return catalog.strategies()
