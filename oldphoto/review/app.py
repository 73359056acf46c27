"""The curator review web application (FastAPI, server-rendered Jinja2 pages, plain JavaScript).

    app = create_app(Catalog(url), host="127.0.0.1")      # `oldphoto review serve` runs it with uvicorn

Pages: /runs (runs and their counts), /items (the results grid: filters, "needs a look" order, server-side
pages), /item/ID (before/after slider and zoom, mask overlay, faces, provenance, decisions). Decisions are
POSTs with a CSRF token by a logged-in reviewer (`oldphoto.review.auth`). Bound to a loopback address the pages
can be read without logging in; bound to any other address every page needs a reviewer.
"""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from oldphoto import __version__
from oldphoto.catalog import Catalog, CatalogError
from oldphoto.catalog import review as rq
from oldphoto.provenance import ITEM_STATUSES
from oldphoto.review.auth import COOKIE, SESSION_S, Session, Sessions
from oldphoto.review.images import MEDIA, ReviewImages

HERE = Path(__file__).resolve().parent
PUBLIC = ("/login", "/static/")
FACE_KINDS = ("face_before", "face_after")
MAX_FORM_BYTES = 64 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _opt_float(v: str | None, scale: float = 1.0) -> float | None:
    try:
        return None if v in (None, "") else float(v) / scale
    except ValueError:
        raise HTTPException(400, f"not a number: {v!r}") from None


def grid_filter(q: dict[str, str]) -> rq.GridFilter:
    """The grid filter from the query string (coverage in percent)."""
    try:
        page = int(q.get("page") or 1)
    except ValueError:
        page = 1
    flt = rq.GridFilter(run_id=q.get("run") or None, status=q.get("status") or None,
                        scratch=q.get("scratch") or None, coverage_min=_opt_float(q.get("cov_min"), 100.0),
                        coverage_max=_opt_float(q.get("cov_max"), 100.0), faces=q.get("faces") or None,
                        reviewed=q.get("reviewed") or None, sort=q.get("sort") or "score", page=page)
    if flt.status not in (None, *ITEM_STATUSES):
        raise HTTPException(400, f"status must be one of {', '.join(ITEM_STATUSES)}")
    try:
        return flt.check()
    except rq.ReviewError as e:
        raise HTTPException(400, str(e)) from None


def reprocess_options(form: dict[str, str]) -> dict[str, Any]:
    """RestoreOptions overrides from the reprocess form: scratch auto/on/off; faces, tone match, colour
    correction, structure return and the detail refiner on/off."""
    opts: dict[str, Any] = {}
    if form.get("scratch") in ("auto", "on", "off"):
        opts["scratch"] = form["scratch"]
    opts["faces"] = form.get("faces") == "on"
    opts["tone_match"] = form.get("tone_match") == "on"
    opts["colour_correct"] = form.get("colour_correct") == "on"
    opts["structure_return"] = form.get("structure_return") == "on"
    opts["refine"] = form.get("refine") == "on"
    return opts


def create_app(catalog: Catalog, host: str = "127.0.0.1", port: int = 8700, sessions: Sessions | None = None) -> FastAPI:
    """The review app over `catalog` (its schema must be current). `host`: the address the server binds; not a
    loopback address = every page needs a logged-in reviewer (and at least one reviewer must be configured)."""
    sessions = sessions or Sessions()
    local = is_loopback(host)
    if not local and not sessions.reviewers:
        raise ValueError(f"bound to {host}, not a loopback address: set OLDPHOTO_REVIEWERS (every page then needs "
                         "a reviewer's login)")
    allowed_hosts = {f"{h}:{port}" for h in (host, "localhost", "127.0.0.1", "[::1]")} | {host, "localhost", "127.0.0.1"}
    images = ReviewImages(catalog)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(version=__version__, pct=_pct, fmt_time=_fmt_time, query=_query)
    app = FastAPI(title="oldphoto review", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.state.catalog, app.state.images, app.state.sessions = catalog, images, sessions

    @app.middleware("http")
    async def session_and_access(request: Request, call_next: Callable[[Request], Any]) -> Response:
        if local and request.headers.get("host", "") not in allowed_hosts:      # DNS rebinding guard
            return Response("unexpected Host header", status_code=400)
        session = sessions.decode(request.cookies.get(COOKIE))
        fresh = None
        if session is None:
            session, fresh = sessions.new()
        request.state.session = session
        path = request.url.path
        if not local and not session.reviewer and not path.startswith(PUBLIC):
            response: Response = RedirectResponse("/login?next=" + _safe_next(path), status_code=303)
        else:
            response = await call_next(request)
        if fresh:
            _set_cookie(response, fresh)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    def page(request: Request, name: str, **ctx: Any) -> HTMLResponse:
        s: Session = request.state.session
        return templates.TemplateResponse(request, name, {"reviewer": s.reviewer, "csrf": sessions.csrf(s),
                                                          "can_decide": bool(s.reviewer), "local": local, **ctx})

    @app.exception_handler(CatalogError)
    async def catalog_error(request: Request, exc: CatalogError) -> Response:
        return Response(str(exc), status_code=404, media_type="text/plain")

    @app.exception_handler(rq.ReviewError)
    async def review_error(request: Request, exc: rq.ReviewError) -> Response:
        return Response(str(exc), status_code=400, media_type="text/plain")

    @app.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse("/runs", status_code=303)

    @app.get("/runs", response_class=HTMLResponse)
    def runs(request: Request) -> HTMLResponse:
        return page(request, "runs.html", runs=rq.runs_overview(catalog))

    @app.get("/items", response_class=HTMLResponse)
    def items(request: Request) -> HTMLResponse:
        q = dict(request.query_params)
        flt = grid_filter(q)
        result = rq.grid(catalog, flt)
        return page(request, "grid.html", grid=result, flt=flt, q=q, run_ids=rq.run_ids(catalog), statuses=ITEM_STATUSES,
                    face_filters=rq.FACE_FILTERS, reviewed_filters=rq.REVIEWED_FILTERS, sorts=rq.SORTS)

    @app.get("/item/{item_id}", response_class=HTMLResponse)
    def item(request: Request, item_id: int, result: int | None = None) -> HTMLResponse:
        rev = rq.item_review(catalog, item_id, result)
        att = next(a for a in rev.history.attempts if a.run_id == rev.run_id)
        arts = rq.artefacts(catalog, rev.result_id)
        faces = []
        for f in att.faces:
            crops = {a["kind"]: a["id"] for a in arts
                     if a["kind"] in FACE_KINDS and (a["extra"] or {}).get("face") == f["face_index"]}
            faces.append({**f, "before_id": crops.get("face_before"), "after_id": crops.get("face_after")})
        has = {a["kind"] for a in arts}
        return page(request, "item.html", rev=rev, att=att, item=rev.history.item, faces=faces,
                    has_after="restored" in has, has_mask="mask" in has,
                    params=json.dumps(att.provenance.parameters if att.provenance else {}, indent=2, sort_keys=True),
                    flash=request.query_params.get("done"),
                    back=_safe_next(request.query_params.get("back") or "/items"))

    @app.get("/img/{result_id}/{kind}")
    def image(result_id: int, kind: str) -> Response:
        if kind not in MEDIA:
            raise HTTPException(404, "no such review image")
        data = images.get(result_id, kind)
        if data is None:
            raise HTTPException(404, "no such review image for this result")
        return Response(data, media_type=MEDIA[kind], headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/artefact/{artefact_id}")
    def artefact(artefact_id: int) -> Response:
        a = rq.artefact(catalog, artefact_id)
        if a["kind"] not in FACE_KINDS:              # only the small face crops are served as they are
            raise HTTPException(404, "not a face crop")
        from oldphoto.storage import open_storage

        return Response(open_storage(a["uri"]).read_bytes(a["uri"]), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/item/{item_id}/decide")
    async def decide(request: Request, item_id: int) -> Response:
        s: Session = request.state.session
        form = await _form(request)
        if not sessions.check_csrf(s, form.get("csrf")):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        if not s.reviewer:
            raise HTTPException(401, "log in as a reviewer to record a decision")
        decision = form.get("decision", "")
        result_id = int(form["result_id"]) if form.get("result_id", "").isdigit() else None
        opts = reprocess_options(form) if decision == "reprocess" else {}
        d = rq.record_decision(catalog, item_id, result_id, decision, s.reviewer, form.get("note"), opts)
        back = form.get("back") or "/items"
        target = f"/item/{item_id}?" + urlencode({"result": d.result_id, "done": d.decision, "back": _safe_next(back)})
        return RedirectResponse(target, status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        return page(request, "login.html", next=_safe_next(request.query_params.get("next") or "/runs"), error=None,
                    configured=bool(sessions.reviewers))

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        nxt = _safe_next(form.get("next") or "/runs")
        if not sessions.check_csrf(request.state.session, form.get("csrf")):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        name = form.get("name", "").strip()
        if not sessions.login(name, form.get("password", "")):
            return page(request, "login.html", next=nxt, error="unknown reviewer or wrong password",
                        configured=bool(sessions.reviewers))
        _, cookie = sessions.new(name)
        response = RedirectResponse(nxt, status_code=303)
        _set_cookie(response, cookie)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form = await _form(request)
        if not sessions.check_csrf(request.state.session, form.get("csrf")):
            raise HTTPException(403, "missing or wrong CSRF token")
        _, cookie = sessions.new()
        response = RedirectResponse("/runs", status_code=303)
        _set_cookie(response, cookie)
        return response

    return app


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (bounded), first value of each field."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise HTTPException(415, "send a form")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def _set_cookie(response: Response, value: str) -> None:
    response.set_cookie(COOKIE, value, max_age=SESSION_S, httponly=True, samesite="strict", path="/")


def _safe_next(path: str) -> str:
    """Only local paths as redirect targets (no open redirect)."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/runs"


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100.0 * x:.{digits}f} %"


def _fmt_time(t: Any) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _query(q: dict[str, str], **changes: Any) -> str:
    """The grid's query string with `changes` applied (None removes a key)."""
    d = {k: v for k, v in q.items() if v not in (None, "")}
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = str(v)
    return urlencode(d)
