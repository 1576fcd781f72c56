"""HTTP Digest for SIP (RFC 3261 section 22.4, RFC 2617 qop=auth, RFC 8760 SHA-256).

Headers are parsed and serialized by ``sipmessage`` (``AuthChallenge``,
``AuthCredentials``); hashing is ``hashlib``. Nonces are stateless: the
issue time and an HMAC of it under a per-process secret, so any worker can
check them and they expire after ``nonce_ttl`` seconds.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sipmessage import URI, AuthChallenge, AuthCredentials
from sipmessage.auth import AuthParameters

#: RFC 8760 algorithm names -> hashlib names.
ALGORITHMS = {"MD5": "md5", "SHA-256": "sha256"}


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(ALGORITHMS[algorithm], text.encode()).hexdigest()


def digest_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
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


@dataclass(frozen=True)
class Verdict:
    """The outcome of :meth:`DigestAuthenticator.check`.

    Attributes:
        user: the authenticated user name, or ``None``.
        stale: the credentials were right but the nonce had expired: challenge
            again with ``stale=true`` (RFC 7616 section 3.3) so the UA retries
            without asking its user.
        reason: why it failed (for the log): ``missing``, ``malformed``,
            ``unknown_user``, ``wrong_realm``, ``bad_nonce``, ``uri_mismatch``,
            ``replay``, ``bad_response``; empty on success.
    """

    user: str | None
    stale: bool = False
    reason: str = ""


class DigestAuthenticator:
    """Challenges and verifies requests for one realm (UAS side).

    Credentials are bound to the request: the ``uri`` parameter must equal the
    Request-URI (RFC 7616 section 3.4.6), and with ``qop=auth`` the
    nonce-count ``nc`` must grow for each use of a nonce (RFC 7616 section
    3.4; a captured ``Authorization`` header replayed gets a new challenge).
    Without ``qop`` a nonce is good for one request. The nonce-count table is
    bounded: entries leave with their nonce's lifetime.

    Args:
        users: ``username -> password``.
        realm: the protection realm.
        algorithms: challenge algorithms, preferred first.
        nonce_ttl: seconds a nonce stays valid.
        max_nonces: nonces tracked at most (the oldest are forgotten, and with
            them their requests are refused as replays).
    """

    def __init__(
        self,
        users: dict[str, str],
        realm: str,
        algorithms: list[str],
        nonce_ttl: float = 300.0,
        max_nonces: int = 100000,
    ) -> None:
        self.users = users
        self.realm = realm
        self.algorithms = [a for a in algorithms if a in ALGORITHMS] or ["MD5"]
        self.nonce_ttl = nonce_ttl
        self.max_nonces = max_nonces
        self._secret = secrets.token_bytes(32)
        #: nonce -> (issue time, highest nc seen; 0 = issued, unused).
        self._seen: collections.OrderedDict[str, list[float]] = collections.OrderedDict()

    def _nonce(self, now: float) -> str:
        stamp = f"{now:.3f}:{secrets.token_hex(4)}"
        mac = hmac.new(self._secret, stamp.encode(), "sha256").hexdigest()[:32]
        return base64.b64encode(f"{stamp}:{mac}".encode()).decode()

    def _nonce_issued(self, nonce: str) -> float | None:
        """The issue time of a nonce we made, or ``None``."""
        try:
            stamp, salt, mac = base64.b64decode(nonce, validate=True).decode().split(":")
            issued = float(stamp)
        except (ValueError, UnicodeDecodeError):
            return None
        good = hmac.new(self._secret, f"{stamp}:{salt}".encode(), "sha256").hexdigest()[:32]
        return issued if hmac.compare_digest(mac, good) else None

    def _expire(self, now: float) -> None:
        while self._seen:
            nonce, (issued, _) = next(iter(self._seen.items()))
            if now - issued <= self.nonce_ttl and len(self._seen) <= self.max_nonces:
                break
            self._seen.popitem(last=False)

    def challenges(self, now: float, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values, one per algorithm (RFC 8760 section 2.4),
        with ``stale=true`` after an expired nonce (RFC 7616 section 3.3)."""
        nonce = self._nonce(now)
        self._expire(now)
        self._seen[nonce] = [now, 0]
        extra = {"stale": "true"} if stale else {}
        return [
            str(
                AuthChallenge(
                    "Digest", AuthParameters(realm=self.realm, nonce=nonce, algorithm=alg, qop="auth", **extra)
                )
            ).replace('stale="true"', "stale=true")
            for alg in self.algorithms
        ]

    def check(self, header: str | None, method: str, request_uri: str, now: float) -> Verdict:
        """Check an ``Authorization`` header value for a request (RFC 3261 section 22.4).

        Args:
            header: the header value, or ``None``.
            method: the request's method (it is covered by the response hash).
            request_uri: the request's Request-URI as text; ``uri`` must equal it.
            now: monotonic seconds.

        Never raises on a malformed header (it just fails verification).
        """
        if not header:
            return Verdict(None, reason="missing")
        try:
            creds = AuthCredentials.parse(header)
        except ValueError:
            return Verdict(None, reason="malformed")
        p = creds.parameters
        if creds.scheme.lower() != "digest" or p is None:
            return Verdict(None, reason="malformed")
        try:
            username, realm, nonce, uri, response = p["username"], p["realm"], p["nonce"], p["uri"], p["response"]
        except KeyError:
            return Verdict(None, reason="malformed")
        algorithm = p.get("algorithm", "MD5").upper()
        password = self.users.get(username)
        if password is None:
            return Verdict(None, reason="unknown_user")
        if realm != self.realm or algorithm not in self.algorithms:
            return Verdict(None, reason="wrong_realm")
        issued = self._nonce_issued(nonce)
        if issued is None or now < issued:
            return Verdict(None, reason="bad_nonce")
        if not _same_uri(uri, request_uri):
            return Verdict(None, reason="uri_mismatch")
        qop = p.get("qop")
        if qop not in (None, "auth"):
            return Verdict(None, reason="malformed")
        nc_text = p.get("nc", "")
        expected = digest_response(
            algorithm, username, realm, password, method, uri, nonce, qop, nc_text, p.get("cnonce", "")
        )
        if not hmac.compare_digest(expected, response.lower()):
            return Verdict(None, reason="bad_response")
        if now - issued > self.nonce_ttl:
            return Verdict(None, stale=True, reason="bad_nonce")
        self._expire(now)
        seen = self._seen.get(nonce)
        if qop == "auth":
            try:
                nc = int(nc_text, 16)
            except ValueError:
                return Verdict(None, reason="malformed")
            if seen is None or nc <= seen[1]:
                return Verdict(None, reason="replay")
            seen[1] = nc
        else:
            if seen is None or seen[1] > 0:
                return Verdict(None, reason="replay")
            seen[1] = 1
        return Verdict(username)

    def verify(self, header: str | None, method: str, now: float, request_uri: str | None = None) -> str | None:
        """:meth:`check` reduced to the user name (or ``None``). Without
        ``request_uri`` the header's own ``uri`` is taken (tests of the hash only)."""
        if request_uri is None:
            try:
                request_uri = AuthCredentials.parse(header or "").parameters["uri"]  # type: ignore[index]  # None raises TypeError, caught
            except (ValueError, KeyError, TypeError):
                return None
        return self.check(header, method, request_uri, now).user


def _same_uri(a: str, b: str) -> bool:
    """Whether two Request-URIs are the same (RFC 3261 section 19.1.4 comparison, via sipmessage)."""
    if a == b:
        return True
    try:
        return URI.parse(a) == URI.parse(b)
    except ValueError:
        return False


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
        params["response"] = digest_response(
            algorithm, username, p["realm"], password, method, uri, p["nonce"], "auth", nc, cnonce
        )
    else:
        params["response"] = digest_response(algorithm, username, p["realm"], password, method, uri, p["nonce"])
    if "opaque" in p:
        params["opaque"] = p["opaque"]
    value = str(AuthCredentials("Digest", AuthParameters(**params)))
    # RFC 3261 section 25.1: in credentials, message-qop is a bare token;
    # sipmessage quotes every "qop" (right for challenges only).
    return value.replace('qop="auth"', "qop=auth")
