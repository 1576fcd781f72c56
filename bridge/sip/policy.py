"""Admission control for new calls, sans-IO: who may call, how often, how many.

Checked in this order for each new INVITE (first failure answers):

1. source allowlist (CIDRs, Twilio preset) -> ``403 Forbidden``;
2. draining (SIGTERM received) -> ``503`` + ``Retry-After``;
3. per-source INVITE rate (token bucket) -> ``503`` + ``Retry-After``;
4. ``X-Twilio-AccountSid`` against the configured accounts -> ``403``;
5. digest authentication for sources not exempt -> ``401`` with challenges;
6. global and per-caller concurrent-call caps -> ``503`` + ``Retry-After``; a Call-ID
   already live on the other leg -> ``482``.

Draining and the caps are the rules both legs share: the caller passes the verdict of
:meth:`bridge.calls.registry.CallRegistry.refusal` as ``shared``, and this policy
answers it at its place in the order.

Failover: Twilio tries the next origination URI after a 5xx but not after 403/401
(docs/twilio.md, "Origination"), which is what an operator wants for each case.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import AccessSettings
from .digest import DigestAuthenticator

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def load_networks(entries: list[str], base: Path | None = None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """CIDRs, plus ``@file.yaml`` entries naming YAML lists of CIDRs.

    Raises:
        ValueError: an entry is not a network.
        FileNotFoundError: a named file does not exist.
    """
    out = []
    for entry in entries:
        if entry.startswith("@"):
            path = Path(entry[1:])
            if not path.is_absolute() and base is not None:
                path = base / path
            out += load_networks([str(x) for x in yaml.safe_load(path.read_text()) or []], base)
        else:
            out.append(ipaddress.ip_network(entry, strict=False))
    return out


def _in(networks: list[IPNetwork], host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ip in net for net in networks)


@dataclass(frozen=True)
class Decision:
    """A refusal: the final response to send and the reason to log/count."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class AdmissionPolicy:
    """Decides on new INVITEs. See the module docstring.

    Args:
        access: :class:`bridge.config.AccessSettings`.
        base: directory for relative ``@file`` entries.
    """

    def __init__(self, access: AccessSettings, base: Path | None = None) -> None:
        self.access = access
        self.allow = load_networks(access.allowlist, base)
        self.digest_exempt = load_networks(access.digest.exempt, base)
        self.digest = (
            DigestAuthenticator(access.digest.users, access.digest.realm, access.digest.algorithms)
            if access.digest.users
            else None
        )
        self._buckets: dict[str, _Bucket] = {}

    def _retry(self) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.access.retry_after))]

    def _rate_ok(self, host: str, now: float) -> bool:
        rate, burst = self.access.invite_rate, self.access.invite_burst
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) > 10000:  # bound the table: forget full buckets
                self._buckets = {h: b for h, b in self._buckets.items() if b.tokens + (now - b.stamp) * rate < burst}
            bucket = self._buckets[host] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def check(
        self,
        source: tuple[str, int],
        headers: dict[str, str],
        authorization: str | None,
        now: float,
        request_uri: str = "",
        shared: str | None = None,
    ) -> Decision | None:
        """``None`` to accept the call, or the :class:`Decision` to refuse it.

        Args:
            source: where the INVITE came from.
            headers: the call's metadata headers (``X-Twilio-AccountSid`` ...).
            authorization: the ``Authorization`` header value, if any.
            now: monotonic seconds.
            request_uri: the INVITE's Request-URI (digest credentials must name it).
            shared: the verdict of the rules both legs share (``draining``,
                ``at_capacity``, ``caller_at_capacity``, ``duplicate_call_id``), or ``None``.
        """
        host = source[0]
        if self.allow and not _in(self.allow, host):
            return Decision(403, "not_allowed")
        if shared == "draining":
            return Decision(503, "draining", self._retry())
        if not self._rate_ok(host, now):
            return Decision(503, "rate_limited", self._retry())
        accounts = self.access.twilio_accounts
        if accounts:
            sid = next((v for k, v in headers.items() if k.lower() == "x-twilio-accountsid"), None)
            if sid not in accounts:
                return Decision(403, "wrong_account")
        if self.digest is not None and not _in(self.digest_exempt, host):
            verdict = self.digest.check(authorization, "INVITE", request_uri, now)
            if verdict.user is None:
                reason = "unauthenticated" if verdict.reason == "missing" else f"unauthenticated_{verdict.reason}"
                return Decision(
                    401, reason, [("WWW-Authenticate", c) for c in self.digest.challenges(now, stale=verdict.stale)]
                )
        if shared == "duplicate_call_id":
            return Decision(482, shared)  # RFC 3261 section 8.2.2.2
        if shared is not None:
            return Decision(503, shared, self._retry())
        return None
