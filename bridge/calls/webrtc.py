"""Browser calls (the console's "Talk to this agent"): admission, offer/answer, the agent.

The page POSTs its SDP offer (RFC 8829 JSEP, non-trickle: its ICE candidates are in
it); :meth:`WebRtcCalls.offer` answers it through aiortc with the call's own SDP answer
(RFC 3264), or refuses:

- :class:`Refused` ``503`` while draining, at ``access.max_calls``, or when the console
  user already has ``access.max_calls_per_caller`` calls (the shared rules of
  :meth:`bridge.calls.registry.CallRegistry.refusal`), ``404`` for an unknown route;
- :class:`Refused` ``400`` for an offer that is not SDP, or carries no audio.

ICE: host candidates only. No STUN or TURN server is contacted unless
``console.ice_servers`` names one (aiortc's own default is a public STUN server; it is
never used). The call becomes live when DTLS is up: the conversation starts then (so
that the greeting is not spoken into a connection that does not carry it yet), and it
ends when the page hangs up, the peer connection fails or closes, or the agent ends it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from ..agents import build_agent
from ..config import Settings
from ..observability.metrics import Metrics
from ..routing import Router
from .registry import CallRegistry

log = logging.getLogger("bridge.calls")

#: Seconds a browser has to complete ICE and DTLS after the answer.
CONNECT_TIMEOUT_S = 20.0


class Refused(Exception):
    """An offer that does not become a call: ``status`` (HTTP) and ``reason`` (one line)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def peer_configuration(console):
    """The ``aiortc.RTCConfiguration`` of a browser call: ``console.ice_servers`` as
    ``RTCIceServer`` objects, and an empty list (never ``None``, which makes aiortc use a
    public STUN server) when none is configured: host candidates only."""
    from aiortc import RTCConfiguration, RTCIceServer

    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=url, username=console.ice_username or None, credential=console.ice_credential or None)
            for url in console.ice_servers
        ]
    )


class WebRtcCalls:
    """Admits browser calls (see the module docstring).

    Args:
        host: the server (ends calls, runs tasks, holds the records).
        settings, engines, metrics: the server's.
        registry: every live call of every leg.
        router: route names -> agent profiles.
    """

    def __init__(
        self, host, settings: Settings, engines, metrics: Metrics, registry: CallRegistry, router: Router
    ) -> None:
        self.host = host
        self.settings = settings
        self.engines = engines
        self.metrics = metrics
        self.registry = registry
        self.router = router

    async def offer(self, route: str, sdp: str, kind: str, caller: str) -> dict:
        """Answer a browser's offer for ``route``'s agent. Returns ``{"sdp", "type":
        "answer", "call_id"}``.

        Raises:
            Refused: see the module docstring.
        """
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from ..webrtc.leg import WebRtcCallLeg

        profile = self.router.profiles.get(route)
        if profile is None:
            raise Refused(404, f"no route {route!r}")
        if kind != "offer" or not isinstance(sdp, str) or not sdp.startswith("v=0"):
            raise Refused(400, 'the body must be {"type": "offer", "sdp": "v=0..."}')
        if "m=audio" not in sdp:
            raise Refused(400, "the offer has no audio (m=audio)")
        call_id = f"webrtc-{secrets.token_hex(8)}"
        shared = self.registry.refusal(call_id, caller)
        if shared is not None:
            self.metrics.calls.labels(f"rejected_{shared}").inc()
            log.info("call %s: browser call refused (%s)", call_id, shared)
            raise Refused(
                503,
                {
                    "draining": "the bridge is shutting down",
                    "at_capacity": "the bridge is at its call limit (access.max_calls)",
                    "caller_at_capacity": "you already have as many calls as one caller may (access.max_calls_per_caller)",
                }.get(shared, shared),
            )
        pc = RTCPeerConnection(peer_configuration(self.settings.console))
        leg = WebRtcCallLeg(self.host, call_id, caller, pc)
        leg.profile = profile

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            leg.attach_channel(channel)

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "audio":
                leg.spawn(leg.pump(track))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            log.info("call %s: webrtc %s", call_id, state)
            if state == "connected" and not leg.connected.is_set():
                self._connected(leg)
            elif state in ("failed", "closed"):
                leg.hangup("disconnected")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if not any(t.kind == "audio" for t in pc.getTransceivers()):
                raise ValueError("the offer has no audio (m=audio)")
            pc.addTrack(leg.track)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # noqa: BLE001 - a malformed offer is the browser's error: 400 with the reason
            await pc.close()
            self.metrics.calls.labels("rejected_bad_offer").inc()
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            log.info("call %s: browser offer refused: %s", call_id, reason)
            raise Refused(400, f"malformed offer: {reason}") from None
        leg.conversation = build_agent(self.settings, self.engines, leg, self.metrics, profile)
        self.registry.open(
            leg, caller=caller, called=route, route=profile.name, codec="opus", transport="webrtc", srtp=True
        )
        self.metrics.calls.labels("webrtc").inc()
        log.info("call %s: browser call from console user %s to route %s", call_id, caller, route)
        leg.spawn(self._connect_timeout(leg))
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "call_id": call_id}

    def _connected(self, leg) -> None:
        leg.connected.set()
        self.registry.answered(leg)
        log.info("call %s: browser connected", leg.call_id)
        leg.conversation.start()
        leg.spawn(leg.watch_transcript())

    async def _connect_timeout(self, leg) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT_S)
        if not leg.connected.is_set():
            log.info("call %s: the browser did not connect within %.0f s", leg.call_id, CONNECT_TIMEOUT_S)
            leg.hangup("timeout")
