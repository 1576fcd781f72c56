"""The operator console: a read-only view of the call records on the HTTP listener.

``GET /calls`` lists calls (filter by number and date), ``GET /calls/{id}`` shows one
call's transcript with a per-turn latency waterfall (endpoint, ASR, LLM first token,
TTS first audio, first packet) and an audio player for its recording, served by
``GET /calls/{id}/recording``. ``GET /campaigns`` lists the outbound campaigns with
their progress and outcome counts, ``GET /campaigns/{name}`` shows one campaign's
callees. Server-rendered Jinja2 templates, no JavaScript, except ``/talk/{route}``
(:mod:`.talk`): a browser call to a route's agent over WebRTC.

Access needs ``console.token`` (``Authorization: Bearer``, or ``?token=`` once: it
is then kept in an HttpOnly cookie) or ``console.username``/``console.password``
(HTTP basic auth, RFC 7617). With neither configured the console is off (404);
without valid credentials it answers 401.
"""

from __future__ import annotations

import base64
import hmac
import logging
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ..records.commands import load_call, query_calls

log = logging.getLogger("bridge.console")

COOKIE = "bridge_console"
#: The latency stages drawn in the waterfall, in pipeline order, with their labels.
STAGES = (
    ("endpoint", "endpoint"),
    ("asr_final", "ASR"),
    ("llm_first_token", "LLM first token"),
    ("tts_first_audio", "TTS first audio"),
    ("first_packet", "first packet"),
)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def authorized(settings, request: Request) -> bool:
    """Whether ``request`` carries the console token (header, query or cookie) or the basic-auth user."""
    token = settings.token
    if token:
        header = request.headers.get("authorization", "")
        for candidate in (
            header[7:] if header.lower().startswith("bearer ") else "",
            request.query_params.get("token", ""),
            request.cookies.get(COOKIE, ""),
        ):
            if candidate and _same(candidate, token):
                return True
    if settings.username and settings.password:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return _same(user, settings.username) and _same(password, settings.password)
    return False


def _has_campaigns(engine) -> bool:
    from sqlalchemy import inspect

    return "campaigns" in inspect(engine).get_table_names()


def waterfall(latencies: dict) -> list[dict]:
    """The turn's stages as bars: ``label``, ``start`` and ``width`` in percent of the
    turn's span, and ``seconds`` (when the stage finished, after the caller stopped)."""
    stages = [(key, label, latencies[key]) for key, label in STAGES if isinstance(latencies.get(key), (int, float))]
    if not stages:
        return []
    span = max(value for _, _, value in stages) or 1.0
    bars, previous = [], 0.0
    for key, label, value in stages:
        start = min(previous, value)
        bars.append(
            {
                "key": key,
                "label": label,
                "seconds": value,
                "start": 100 * start / span,
                "width": max(0.5, 100 * (value - start) / span),
            }
        )
        previous = max(previous, value)
    return bars


def mount_console(app: FastAPI, server) -> None:
    """Add the console's routes to ``app`` (the Media Streams HTTP app of ``server``)."""
    console = server.settings.console
    enabled = bool(console.token or (console.username and console.password))
    if not enabled:
        log.info("console: off (set console.token or console.username/password)")
    elif server.store is None:
        log.info("console: off (call records are off: storage.url is empty)")
        enabled = False

    def guard(request: Request) -> None:
        if not enabled:
            raise HTTPException(404)
        if not authorized(console, request):
            log.info(
                "console: unauthorized %s from %s", request.url.path, request.client.host if request.client else "?"
            )
            headers = (
                {"WWW-Authenticate": 'Basic realm="bridge console"'}
                if console.username
                else {"WWW-Authenticate": "Bearer"}
            )
            raise HTTPException(401, "credentials required", headers=headers)

    def keep_token(request: Request, response: Response) -> Response:
        token = request.query_params.get("token")
        if token and console.token and _same(token, console.token):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    @app.get("/calls", response_class=HTMLResponse)
    def calls_page(request: Request, number: str = "", since: str = "", until: str = "", limit: int = 100):
        guard(request)
        try:
            calls = query_calls(
                server.store.engine, since or None, min(max(limit, 1), 1000), number or None, until or None
            )
            error = ""
        except ValueError as exc:
            calls, error = [], f"not a date: {exc}"
        page = templates.TemplateResponse(
            request, "calls.html", {"calls": calls, "number": number, "since": since, "until": until, "error": error}
        )
        return keep_token(request, page)

    @app.get("/calls/{call_id}", response_class=HTMLResponse)
    def call_page(request: Request, call_id: str):
        guard(request)
        call = load_call(server.store.engine, call_id)
        if call is None:
            raise HTTPException(404, "no such call")
        for turn in call["turns"]:
            turn["bars"] = waterfall(turn["latencies"] or {})
        has_audio = bool(call["recording_path"]) and Path(call["recording_path"]).is_file()
        page = templates.TemplateResponse(request, "call.html", {"call": call, "has_audio": has_audio})
        return keep_token(request, page)

    @app.get("/calls/{call_id}/recording")
    def recording(request: Request, call_id: str):
        guard(request)
        call = load_call(server.store.engine, call_id)
        path = Path(call["recording_path"]) if call and call["recording_path"] else None
        if path is None or not path.is_file():
            raise HTTPException(404, "no recording")
        return FileResponse(
            path, media_type="audio/flac" if path.suffix == ".flac" else "audio/wav", filename=path.name
        )

    @app.get("/campaigns", response_class=HTMLResponse)
    def campaigns_page(request: Request):
        guard(request)
        from ..outbound.campaign import OUTCOMES, CampaignStore, all_campaigns

        names = all_campaigns(server.store.engine) if _has_campaigns(server.store.engine) else []
        rows = [CampaignStore(server.store.engine, name).status() for name in names]
        page = templates.TemplateResponse(
            request, "campaigns.html", {"campaigns": [r for r in rows if r], "outcomes": OUTCOMES}
        )
        return keep_token(request, page)

    @app.get("/campaigns/{name}", response_class=HTMLResponse)
    def campaign_page(request: Request, name: str):
        guard(request)
        from ..outbound.campaign import OUTCOMES, CampaignStore

        store = CampaignStore(server.store.engine, name)
        status = store.status() if _has_campaigns(server.store.engine) else None
        if status is None:
            raise HTTPException(404, "no such campaign")
        page = templates.TemplateResponse(
            request, "campaign.html", {"c": status, "callees": store.callees(), "outcomes": OUTCOMES}
        )
        return keep_token(request, page)

    from .talk import mount_talk

    mount_talk(app, server, templates, guard, keep_token, [[key, label] for key, label in STAGES])

    @app.get("/calls/", include_in_schema=False)
    def calls_slash(request: Request):
        return RedirectResponse("/calls" + (f"?{request.url.query}" if request.url.query else ""))
