"""The WebRTC leg: an operator talks to a route's agent from the console in a browser.

========================= ===================================================
module                    concern
========================= ===================================================
:mod:`.leg`               one browser call: the peer connection (aiortc), the
                          microphone's Opus resampled to 8 kHz frames for the
                          conversation and the agent's frames back, the
                          ``events`` data channel (transcript, latencies,
                          DTMF, hang-up)
:mod:`bridge.calls.webrtc` admission, the offer/answer (RFC 3264 through
                          aiortc), ICE servers (none unless configured)
========================= ===================================================
"""
