""" "Talk to this agent": the console's browser calls (:mod:`bridge.calls.webrtc`).

``GET /talk`` lists the routes (agent profiles); ``GET /talk/{route}`` is the page
(start and stop, the microphone prompt, the live transcript of both sides, the
per-turn latency waterfall, a DTMF keypad, and the link to the call page when the call
ends); ``POST /talk/{route}/offer`` takes the page's SDP offer as JSON
(``{"type": "offer", "sdp": ...}``) and answers ``{"type": "answer", "sdp", "call_id"}``,
or an error ``{"detail": reason}``: 400 (malformed offer), 401 (no or wrong
credentials), 404 (no such route), 503 (draining, at a call limit). All behind the
console's authentication; the console user is the caller for per-caller caps.
"""

from __future__ import annotations

import base64
import json

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse


def console_user(request: Request) -> str:
    """The caller identity of a console request: the basic-auth user, else ``console``."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            return base64.b64decode(header[6:]).decode().partition(":")[0] or "console"
        except (ValueError, UnicodeDecodeError):
            pass
    return "console"


def mount_talk(app: FastAPI, server, templates, guard, keep_token, stages) -> None:
    """Add the talk routes to ``app``; ``guard`` and ``keep_token`` are the console's."""
    from ..calls.webrtc import Refused

    @app.get("/talk", response_class=HTMLResponse)
    def talk_index(request: Request):
        guard(request)
        page = templates.TemplateResponse(request, "talk_index.html", {"routes": sorted(server.router.profiles)})
        return keep_token(request, page)

    @app.get("/talk/{route}", response_class=HTMLResponse)
    def talk_page(request: Request, route: str):
        guard(request)
        if route not in server.router.profiles:
            raise HTTPException(404, "no such route")
        ice = [{"urls": url} for url in server.settings.console.ice_servers]
        page = templates.TemplateResponse(
            request, "talk.html", {"route": route, "ice": json.dumps(ice), "stages": json.dumps(stages)}
        )
        return keep_token(request, page)

    @app.post("/talk/{route}/offer")
    async def talk_offer(request: Request, route: str):
        guard(request)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"detail": 'the body must be JSON: {"type": "offer", "sdp": ...}'}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"detail": "the body must be a JSON object"}, status_code=400)
        try:
            answer = await server.webrtc.offer(route, body.get("sdp"), body.get("type"), console_user(request))
        except Refused as exc:
            return JSONResponse({"detail": exc.reason}, status_code=exc.status)
        return JSONResponse(answer)
