"""The HTTP side of Media Streams mode: the TwiML webhook and the WebSocket (FastAPI).

- ``POST /twiml``: the number's voice URL. Checks ``X-Twilio-Signature``
  (``twilio.request_validator.RequestValidator``) against the public URL
  Twilio called, answers ``<Connect><Stream url="wss://.../media-stream">``
  with ``<Parameter>``s carrying the call's context; 403 otherwise.
- ``WS /media-stream``: checks the upgrade's signature too (with and without a
  trailing ``/``, as Twilio's docs advise), then runs a :class:`MediaStreamLeg`.

The public URL: ``mediastreams.public_url`` when set (the base URL Twilio is
configured with), else rebuilt from ``X-Forwarded-Proto``/``X-Forwarded-Host``
(or ``Host``) of the request, as a proxy passes them.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, Response
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

from . import protocol as p
from .leg import MediaStreamLeg

log = logging.getLogger("bridge.mediastreams")


def public_base(settings, headers, scheme: str) -> str:
    """``https://host`` Twilio used: configured, or from the proxy's forwarded headers."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    proto = headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
    host = headers.get("x-forwarded-host", headers.get("host", "")).split(",")[0].strip()
    return f"{proto}://{host}"


def ws_base(base: str) -> str:
    """``https://host`` -> ``wss://host`` (``http`` -> ``ws``): the Stream URL's base."""
    return "wss://" + base[len("https://") :] if base.startswith("https://") else "ws://" + base.split("://", 1)[-1]


def build_app(server) -> FastAPI:
    """The FastAPI app for ``server`` (a :class:`bridge.server.BridgeServer`)."""
    settings = server.settings.mediastreams
    validator = RequestValidator(settings.auth_token) if settings.auth_token else None
    app = FastAPI(title="bridge media streams", docs_url=None, redoc_url=None, openapi_url=None)

    def signature_ok(url: str, params: dict, signature: str | None) -> bool:
        if validator is None:
            return not settings.require_signature
        if not signature:
            return False
        return validator.validate(url, params, signature)

    @app.post("/twiml")
    async def twiml(request: Request) -> Response:
        form = await request.form()
        params = {k: str(v) for k, v in form.items()}
        base = public_base(settings, request.headers, request.url.scheme)
        url = base + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if not signature_ok(url, params, request.headers.get("x-twilio-signature")):
            server.metrics.calls.labels("rejected_bad_signature").inc()
            log.warning(
                "twiml: bad or missing X-Twilio-Signature for %s from %s",
                url,
                request.client.host if request.client else "?",
            )
            return PlainTextResponse("invalid signature", status_code=403)
        response = VoiceResponse()
        if server.router.route(params.get("To")) is None:
            # routes.unrouted: reject -- Twilio rejects the call before any stream ("rejected":
            # the caller hears that the number is not in service, the nearest TwiML has to 404/603).
            log.info("twiml: call %s to %s has no route: <Reject>", params.get("CallSid"), params.get("To"))
            server.metrics.calls.labels("rejected_no_route").inc()
            response.reject(reason="rejected")
            return Response(str(response), media_type="application/xml")
        stream = response.connect().stream(url=ws_base(base) + "/media-stream")
        for name in ("CallSid", "From", "To", "AccountSid"):
            if params.get(name):
                stream.parameter(name=name, value=params[name])
        log.info(
            "twiml: call %s from %s to %s -> media stream", params.get("CallSid"), params.get("From"), params.get("To")
        )
        return Response(str(response), media_type="application/xml")

    @app.websocket("/media-stream")
    async def media_stream(websocket: WebSocket) -> None:
        base = ws_base(public_base(settings, websocket.headers, "https" if websocket.url.scheme == "wss" else "http"))
        url = base + websocket.url.path
        signature = websocket.headers.get("x-twilio-signature")
        if not (signature_ok(url, {}, signature) or signature_ok(url + "/", {}, signature)):
            log.warning("media-stream: bad or missing X-Twilio-Signature for %s", url)
            server.metrics.calls.labels("rejected_bad_signature").inc()
            await websocket.close(code=p.CLOSE_POLICY)  # before accept: the handshake gets 403
            return
        await websocket.accept()

        async def close(code: int, reason: str) -> None:
            try:
                await websocket.close(code=code, reason=reason[:120])
            except RuntimeError:
                pass  # already closed

        leg = MediaStreamLeg(
            server, server.streams.start, websocket.send_text, close, server.twilio_control, settings.max_message_bytes
        )
        try:
            while True:
                # Twilio sends connected then start at once: a silent socket is not a call.
                waiting = leg.session.state in ("new", "connected")
                try:
                    message = await asyncio.wait_for(websocket.receive(), settings.start_timeout if waiting else None)
                except TimeoutError:
                    server.metrics.calls.labels("rejected_no_start").inc()
                    log.warning(
                        "media-stream: no start message within %.0f s, closing %d",
                        settings.start_timeout,
                        p.CLOSE_POLICY,
                    )
                    leg.refuse(p.CLOSE_POLICY, "no start message")
                    break
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("text") if message.get("text") is not None else message.get("bytes")
                if not await leg.receive(data):
                    break
        except p.StreamProtocolError as exc:
            server.metrics.calls.labels("stream_protocol_error").inc()
            log.warning("media-stream %s: closing %d: %s", leg.call_id or "(no call)", exc.code, exc.reason)
            await close(exc.code, exc.reason)
        except WebSocketDisconnect:
            pass
        finally:
            leg.disconnected()
        await close(*(leg.refused or (p.CLOSE_NORMAL, "stream ended")))

    return app
