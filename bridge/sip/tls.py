"""TLS contexts for SIP over TLS (RFC 3261 section 26.2.1; RFC 5630).

Twilio's Secure Trunking speaks TLS 1.2 or later (docs/twilio.md, "Secure Trunking"),
so neither context accepts anything older.
"""

from __future__ import annotations

import ssl


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The context that accepts TLS connections with the PEM files ``cert`` and ``key``.

    Raises:
        ValueError: the certificate or key cannot be loaded (the reason in the message).
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"cannot load the certificate/key pair ({exc.__class__.__name__}: {exc})") from None
    return ctx


def client_context(ca: str = "") -> ssl.SSLContext:
    """The context for TLS connections we open (outbound calls, requests in a dialog),
    verifying the peer against the PEM bundle ``ca`` or, when empty, the system's CAs."""
    ctx = ssl.create_default_context(cafile=ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
