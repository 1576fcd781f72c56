"""What every settings section shares: the error type, the strict base model, and the
parsers of addresses and port ranges."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel as _PydanticModel
from pydantic import ConfigDict


class ConfigError(ValueError):
    """A setting is wrong: ``setting`` is its dotted path (``agent.greeting``),
    ``str(error)`` one line that names it and says what is wrong."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}" if setting else problem)
        self.setting = setting


class BaseModel(_PydanticModel):
    """Every settings section refuses keys it does not know (``agent.greting``)."""

    model_config = ConfigDict(extra="forbid")


def _listen(value: str, default_port: int, *, empty_ok: bool = True) -> str:
    """Validate a ``HOST:PORT`` listen address (host an IP literal; port 0..65535)."""
    if not value and empty_ok:
        return value
    try:
        host, _ = parse_hostport(value, default_port)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not HOST:PORT ({exc})") from None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: the host must be an IP address (0.0.0.0 for all), not {host!r}") from None
    return value


def parse_port_range(value: str) -> tuple[int, int]:
    """``"LOW-HIGH"`` -> ``(low, high)``: 1024 <= low <= high <= 65535, holding at least
    one even port (RTP uses even ports, RFC 3550 section 11).

    Raises:
        ValueError: any other shape.
    """
    low_s, sep, high_s = value.partition("-")
    if not sep or not low_s.strip().isdigit() or not high_s.strip().isdigit():
        raise ValueError(f"{value!r} is not LOW-HIGH (e.g. 10000-20000)")
    low, high = int(low_s), int(high_s)
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"{value!r}: need 1024 <= LOW <= HIGH <= 65535")
    if low % 2 and low == high:
        raise ValueError(f"{value!r} holds no even port (RTP ports are even)")
    return low, high


def parse_hostport(value: str, default_port: int) -> tuple[str, int]:
    """``"host:port"``, ``"host"`` or ``"[v6]:port"`` -> ``(host, port)``.

    Raises:
        ValueError: the port is not an integer 1..65535.
    """
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif value.count(":") == 1:
        host, port_s = value.split(":")
        port = int(port_s)
    else:
        host, port = value, default_port
    if not 0 <= port < 65536:  # 0: let the OS pick
        raise ValueError(f"port out of range in {value!r}")
    return host, port
