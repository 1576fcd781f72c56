"""The call layer: one room per way a call arrives, one registry of live calls.

- :mod:`bridge.calls.registry`: every live call, whatever its leg; admission limits,
  the single teardown path (agent closed, record written, media released).
- :mod:`bridge.calls.sip`: calls that arrive (or leave) as SIP INVITE dialogs with RTP.
- :mod:`bridge.calls.streams`: calls that arrive as Twilio Media Streams WebSockets.
- :mod:`bridge.calls.host`: what a leg needs from the server that owns it.
"""
