"""The dashboard: three HTML pages and their static assets, all served by this app (users may be offline).

Pages are shells; their scripts read the REST API under ``/api``, so a page never touches storage itself.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
STATIC_DIR = DASHBOARD_DIR / "static"

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=DASHBOARD_DIR / "templates")
_static = StaticFiles(directory=STATIC_DIR)

StudyName = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
TrialNumber = Annotated[int, PathParam(ge=0)]


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    api_base = request.scope.get("root_path", "").rstrip("/") + "/api"
    context = {"api_base": api_base, "plotly_version": version("plotly"), **context}
    return templates.TemplateResponse(request, template, context)


@router.get("/", response_class=HTMLResponse, name="dashboard_studies")
def studies_page(request: Request) -> HTMLResponse:
    return _page(request, "studies.html")


@router.get("/studies/{name}", response_class=HTMLResponse, name="dashboard_study")
def study_page(request: Request, name: StudyName) -> HTMLResponse:
    return _page(request, "study.html", study_name=name)


@router.get("/studies/{name}/trials/{number}", response_class=HTMLResponse, name="dashboard_trial")
def trial_page(request: Request, name: StudyName, number: TrialNumber) -> HTMLResponse:
    return _page(request, "trial.html", study_name=name, trial_number=number)


@lru_cache(maxsize=1)
def plotly_js() -> Path:
    """plotly.js as shipped inside the installed ``plotly`` Python package (no copy in this repository)."""
    return Path(str(files("plotly") / "package_data" / "plotly.min.js"))


@router.get("/static/vendor/plotly.min.js", name="plotly_js")
def plotly_asset() -> FileResponse:
    # Pages ask for it with ?v=<plotly version>, so it may be cached for long.
    return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=604800"})


@router.get("/static/{path:path}", name="static")
async def static_asset(path: str, request: Request) -> Response:
    # StaticFiles refuses paths that leave the directory and answers If-None-Match with 304.
    response = await _static.get_response(path, request.scope)
    response.headers["Cache-Control"] = "no-cache"
    return response
