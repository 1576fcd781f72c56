"""HTTP Digest for SIP (RFC 3261 section 22.4, RFC 2617 qop=auth, RFC 8760 SHA-256).

Headers are parsed and serialized by ``sipmessage`` (``AuthChallenge``,
``AuthCredentials``); hashing is ``hashlib``. Nonces are stateless: the
issue time and an HMAC of it under a per-process secret, so any worker can
check them and they expire after ``nonce_ttl`` seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sipmessage import AuthChallenge, AuthCredentials
from sipmessage.auth import AuthParameters

#: RFC 8760 algorithm names -> hashlib names.
ALGORITHMS = {"MD5": "md5", "SHA-256": "sha256"}


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(ALGORITHMS[algorithm], text.encode()).hexdigest()


def digest_response(
    algorithm: str, username: str, realm: str, password: str, method: str, uri: str, nonce: str, qop: str | None = None, nc: str = "", cnonce: str = ""
) -> str:
    """The ``response`` value of RFC 2617 section 3.2.2.1 (RFC 8760 for SHA-256).

    Raises:
        KeyError: unknown algorithm (only ``MD5`` and ``SHA-256``).
    """
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")


class DigestAuthenticator:
    """Challenges and verifies requests for one realm (UAS side).

    Args:
        users: ``username -> password``.
        realm: the protection realm.
        algorithms: challenge algorithms, preferred first.
        nonce_ttl: seconds a nonce stays valid.
    """

    def __init__(self, users: dict[str, str], realm: str, algorithms: list[str], nonce_ttl: float = 300.0) -> None:
        self.users = users
        self.realm = realm
        self.algorithms = [a for a in algorithms if a in ALGORITHMS] or ["MD5"]
        self.nonce_ttl = nonce_ttl
        self._secret = secrets.token_bytes(32)

    def _nonce(self, now: float) -> str:
        stamp = f"{now:.3f}"
        mac = hmac.new(self._secret, stamp.encode(), "sha256").hexdigest()[:32]
        return base64.b64encode(f"{stamp}:{mac}".encode()).decode()

    def _nonce_ok(self, nonce: str, now: float) -> bool:
        try:
            stamp, mac = base64.b64decode(nonce, validate=True).decode().split(":")
            issued = float(stamp)
        except (ValueError, UnicodeDecodeError):
            return False
        good = hmac.new(self._secret, stamp.encode(), "sha256").hexdigest()[:32]
        return hmac.compare_digest(mac, good) and 0 <= now - issued <= self.nonce_ttl

    def challenges(self, now: float) -> list[str]:
        """``WWW-Authenticate`` values, one per algorithm (RFC 8760 section 2.4)."""
        nonce = self._nonce(now)
        return [
            str(AuthChallenge("Digest", AuthParameters(realm=self.realm, nonce=nonce, algorithm=alg, qop="auth")))
            for alg in self.algorithms
        ]

    def verify(self, header: str | None, method: str, now: float) -> str | None:
        """Check an ``Authorization`` header value; return the user name, or ``None``.

        Never raises on a malformed header (it just fails verification).
        """
        if not header:
            return None
        try:
            creds = AuthCredentials.parse(header)
        except ValueError:
            return None
        p = creds.parameters
        if creds.scheme.lower() != "digest" or p is None:
            return None
        try:
            username, realm, nonce, uri, response = p["username"], p["realm"], p["nonce"], p["uri"], p["response"]
        except KeyError:
            return None
        algorithm = p.get("algorithm", "MD5").upper()
        password = self.users.get(username)
        if password is None or realm != self.realm or algorithm not in self.algorithms or not self._nonce_ok(nonce, now):
            return None
        qop = p.get("qop")
        if qop not in (None, "auth"):
            return None
        expected = digest_response(algorithm, username, realm, password, method, uri, nonce, qop, p.get("nc", ""), p.get("cnonce", ""))
        return username if hmac.compare_digest(expected, response.lower()) else None


def authorization_for(challenge_value: str, username: str, password: str, method: str, uri: str) -> str:
    """Answer a ``WWW-Authenticate``/``Proxy-Authenticate`` challenge (UAC side).

    Returns the ``Authorization``/``Proxy-Authorization`` header value.

    Raises:
        ValueError: the challenge is not a Digest challenge we can answer.
    """
    challenge = AuthChallenge.parse(challenge_value)
    p = challenge.parameters
    if challenge.scheme.lower() != "digest" or "nonce" not in p or "realm" not in p:
        raise ValueError("not a Digest challenge")
    algorithm = p.get("algorithm", "MD5").upper()
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algorithm}")
    params = {"username": username, "realm": p["realm"], "nonce": p["nonce"], "uri": uri, "algorithm": algorithm}
    qops = [q.strip() for q in p.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        nc, cnonce = "00000001", secrets.token_hex(8)
        params.update(qop="auth", nc=nc, cnonce=cnonce)
        params["response"] = digest_response(algorithm, username, p["realm"], password, method, uri, p["nonce"], "auth", nc, cnonce)
    else:
        params["response"] = digest_response(algorithm, username, p["realm"], password, method, uri, p["nonce"])
    if "opaque" in p:
        params["opaque"] = p["opaque"]
    value = str(AuthCredentials("Digest", AuthParameters(**params)))
    # RFC 3261 section 25.1: in credentials, message-qop is a bare token;
    # sipmessage quotes every "qop" (right for challenges only).
    return value.replace('qop="auth"', "qop=auth")
