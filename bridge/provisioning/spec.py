"""What a Twilio Elastic SIP Trunk should look like (:class:`TrunkSpec`), checked before
anything is sent: E.164 numbers, origination URIs with priority and weight, CIDRs, the
transfer settings Twilio's Trunking v1 API accepts."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
TRANSFER_MODES = ("enable-all", "sip-only", "disable-all")
TRANSFER_CALLER_IDS = ("from-transferee", "from-transferor")
OURS = "bridge"  # friendly_name prefix of the origination URLs this tool made


class SpecError(ValueError):
    """The arguments describe a trunk Twilio would not accept (exit 2)."""


@dataclass(frozen=True)
class Origination:
    """One origination URL. ``priority`` 0-65535, lowest tried first; ``weight`` 1-65535,
    share within a priority (Twilio Elastic SIP Trunking, origination)."""

    sip_url: str
    priority: int = 10
    weight: int = 10
    enabled: bool = True

    @classmethod
    def parse(cls, text: str, priority: int, weight: int) -> Origination:
        """``"sip:edge1.example.com:5060 priority=10 weight=50"``.

        Raises:
            SpecError: not a ``sip:`` URI, or a bad priority/weight.
        """
        parts = text.split()
        if not parts or not parts[0].startswith("sip:"):
            raise SpecError(f"origination {text!r}: need a sip: URI (Twilio takes no sips:)")
        values = {"priority": priority, "weight": weight}
        for part in parts[1:]:
            key, _, value = part.partition("=")
            if key not in values or not value.isdigit():
                raise SpecError(f"origination {text!r}: {part!r} is not priority=N or weight=N")
            values[key] = int(value)
        if not 0 <= values["priority"] <= 65535 or not 1 <= values["weight"] <= 65535:
            raise SpecError(f"origination {text!r}: priority 0-65535, weight 1-65535")
        return cls(parts[0], values["priority"], values["weight"])


@dataclass
class TrunkSpec:
    """What the trunk should look like."""

    name: str
    domain: str | None = None
    origination: list[Origination] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)
    termination_ips: list[str] = field(default_factory=list)
    termination_user: str | None = None
    termination_password: str | None = None
    rotate_password: bool = False
    secure: bool = False
    transfer_mode: str = "enable-all"
    transfer_caller_id: str = "from-transferee"

    def check(self) -> None:
        """Raises :class:`SpecError` for what Twilio would refuse anyway."""
        if len(self.origination) > 10:
            raise SpecError(f"{len(self.origination)} origination URLs: a trunk takes at most 10")
        if len({o.sip_url for o in self.origination}) != len(self.origination):
            raise SpecError("the same origination URL is given twice")
        if self.domain is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]*\.pstn\.twilio\.com", self.domain):
            raise SpecError(f"domain {self.domain!r}: need NAME.pstn.twilio.com (lower case, digits, '-')")
        for number in self.numbers:
            if not E164.match(number):
                raise SpecError(f"number {number!r} is not E.164 (+ and 7-15 digits)")
        for cidr in self.termination_ips:
            try:
                net = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise SpecError(f"termination IP {cidr!r} is not an address or CIDR") from None
            if net.version != 4:
                raise SpecError(f"termination IP {cidr!r}: Twilio IP access control lists take IPv4")
        if self.termination_user:
            if not self.termination_password:
                raise SpecError("--termination-user needs TWILIO_TERMINATION_PASSWORD in the environment")
            p = self.termination_password
            if len(p) < 12 or not re.search(r"\d", p) or not re.search(r"[a-z]", p) or not re.search(r"[A-Z]", p):
                raise SpecError(
                    "TWILIO_TERMINATION_PASSWORD: Twilio wants 12+ characters with a digit, a lower and an upper case letter"
                )
        if self.transfer_mode not in TRANSFER_MODES:
            raise SpecError(f"transfer mode {self.transfer_mode!r}: one of {', '.join(TRANSFER_MODES)}")
        if self.transfer_caller_id not in TRANSFER_CALLER_IDS:
            raise SpecError(f"transfer caller ID {self.transfer_caller_id!r}: one of {', '.join(TRANSFER_CALLER_IDS)}")

    @property
    def acl_name(self) -> str:
        return f"{self.name}-ips"

    @property
    def credentials_name(self) -> str:
        return f"{self.name}-creds"
