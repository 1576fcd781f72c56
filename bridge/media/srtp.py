"""SRTP with SDES key exchange (RFC 3711, RFC 4568), through ``pylibsrtp`` (libsrtp).

Twilio Secure Trunking offers ``AES_CM_128_HMAC_SHA1_80`` with no MKI on
origination and accepts ``_80`` and ``_32`` on termination (Twilio, "Secure Trunking").
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

import pylibsrtp

#: SDES crypto-suite name -> libsrtp profile. Preference order for our offers.
SUITES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
KEY_SALT_LEN = 30  # 16-byte master key + 14-byte master salt


@dataclass(frozen=True)
class Crypto:
    """One ``a=crypto`` line: ``tag``, ``suite`` and the 30-byte master key||salt."""

    tag: int
    suite: str
    key: bytes

    def attribute(self) -> str:
        """The SDP attribute value, RFC 4568 section 9.1 (no lifetime, no MKI)."""
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"


def parse_crypto(value: str) -> Crypto | None:
    """Parse an ``a=crypto:`` value; ``None`` for a suite, key method or MKI we cannot use.

    Raises:
        ValueError: the line is malformed.
    """
    parts = value.split()
    if len(parts) < 3:
        raise ValueError("crypto attribute needs tag, suite and key params")
    tag = int(parts[0])
    suite = parts[1]
    if suite not in SUITES:
        return None
    key_param = parts[2].split(";")[0]
    if not key_param.startswith("inline:"):
        return None
    fields = key_param[len("inline:") :].split("|")
    if len(fields) > 2:  # an MKI: not supported (Twilio sends none)
        return None
    key = base64.b64decode(fields[0] + "=" * (-len(fields[0]) % 4), validate=True)
    if len(key) != KEY_SALT_LEN:
        raise ValueError("SDES key||salt must be 30 bytes")
    return Crypto(tag, suite, key)


def new_crypto(tag: int, suite: str = "AES_CM_128_HMAC_SHA1_80") -> Crypto:
    """Our own crypto line with a fresh random master key and salt."""
    return Crypto(tag, suite, secrets.token_bytes(KEY_SALT_LEN))


class SrtpContext:
    """Protects our RTP with ``local`` and unprotects the peer's with ``remote``.

    Raises:
        pylibsrtp.Error: (from :meth:`protect`/:meth:`unprotect`) authentication
            failure, replay, or a malformed packet.
    """

    def __init__(self, local: Crypto, remote: Crypto) -> None:
        self.local = local
        self.remote = remote
        self._tx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=local.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=SUITES[local.suite]
            )
        )
        self._rx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=remote.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=SUITES[remote.suite]
            )
        )

    def protect(self, rtp: bytes) -> bytes:
        """RTP packet bytes -> SRTP packet bytes."""
        return self._tx.protect(rtp)

    def unprotect(self, srtp: bytes) -> bytes:
        """SRTP packet bytes -> RTP packet bytes."""
        return self._rx.unprotect(srtp)
