"""Provision a Twilio Elastic SIP Trunk for bridge: ``scripts/provision_twilio.py``.

Built on twilio-python's Trunking v1 and SIP (2010-04-01) resources (Twilio
docs, "Elastic SIP Trunking REST API"). What it manages, all found again by name on the next run:

- the trunk, by ``friendly_name``: ``domain_name``, ``secure`` (TLS + SRTP),
  ``transfer_mode`` (SIP REFER: ``enable-all``, ``sip-only``, ``disable-all``) and
  ``transfer_caller_id``;
- one origination URL per node or Kamailio address (``sip_url``), with ``priority``
  (lowest first) and ``weight`` (share within a priority); at most 10 per trunk.
  Origination URLs this tool made (``friendly_name`` starting ``bridge``) and no longer
  asked for are deleted; others are left alone and reported;
- for termination (``bridge dial``): an IP access control list ``NAME-ips`` with the
  given CIDRs and a credential list ``NAME-creds`` with one user, both associated
  with the trunk;
- the phone numbers (E.164), each looked up among the account's incoming numbers and
  associated with the trunk.

The run reads everything first and builds a plan (``+`` create, ``~`` update, ``-``
delete, ``=`` as asked), then applies it unless ``--dry-run``. A second run with the
same arguments finds nothing to change and says so. ``--remove`` deletes the trunk
(which releases its numbers and origination URLs) and the two lists.

Credentials: ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN``; the termination user's
password from ``TWILIO_TERMINATION_PASSWORD`` (never a command-line argument). Exit
status: 0 done (or nothing to do), 1 the API refused something (one line: status, Twilio
error code, method, path, message) or a number the account does not own, 2 bad
arguments or missing credentials.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from .spec import OURS, SpecError, TrunkSpec


@dataclass
class Step:
    """One line of the plan; ``run`` makes the change (``None`` for ``=`` lines)."""

    mark: str  # "+", "~", "-", "="
    text: str
    run: Callable[[], object] | None = None


def _find(items, **match):
    for item in items:
        if all(getattr(item, k) == v for k, v in match.items()):
            return item
    return None


class Provisioner:
    """Plans and applies one :class:`TrunkSpec` with a ``twilio.rest.Client``."""

    def __init__(self, client) -> None:
        self.client = client
        self.trunk_sid: str | None = None
        self.acl_sid: str | None = None
        self.cl_sid: str | None = None

    # ------------------------------------------------------------------ plan

    def plan(self, spec: TrunkSpec) -> list[Step]:
        """Read the account and return the steps that make it match ``spec``.

        Raises:
            twilio.base.exceptions.TwilioRestException: the API refused a read (401...).
            SpecError: a number the account does not own.
        """
        steps: list[Step] = []
        numbers = self._number_sids(spec.numbers)
        trunk = _find(self.client.trunking.v1.trunks.list(), friendly_name=spec.name)
        wanted = {
            "secure": spec.secure,
            "transfer_mode": spec.transfer_mode,
            "transfer_caller_id": spec.transfer_caller_id,
        }
        if spec.domain:
            wanted["domain_name"] = spec.domain
        if trunk is None:
            detail = ", ".join(f"{k}={v}" for k, v in wanted.items())
            steps.append(Step("+", f"trunk {spec.name!r} ({detail})", lambda: self._create_trunk(spec, wanted)))
        else:
            self.trunk_sid = trunk.sid
            diff = {k: v for k, v in wanted.items() if getattr(trunk, k) != v}
            if diff:
                text = ", ".join(f"{k} {getattr(trunk, k)!r} -> {v!r}" for k, v in diff.items())
                steps.append(
                    Step("~", f"trunk {spec.name!r} {trunk.sid}: {text}", lambda: self._trunk().update(**diff))
                )
            else:
                steps.append(Step("=", f"trunk {spec.name!r} {trunk.sid}"))
        steps += self._plan_origination(spec, trunk)
        steps += self._plan_acl(spec, trunk)
        steps += self._plan_credentials(spec, trunk)
        steps += self._plan_numbers(spec, trunk, numbers)
        return steps

    def _trunk(self):
        assert self.trunk_sid is not None
        return self.client.trunking.v1.trunks(self.trunk_sid)

    def _create_trunk(self, spec: TrunkSpec, wanted: dict) -> None:
        self.trunk_sid = self.client.trunking.v1.trunks.create(friendly_name=spec.name, **wanted).sid

    def _number_sids(self, numbers: list[str]) -> dict[str, str]:
        sids = {}
        for number in numbers:
            found = self.client.api.incoming_phone_numbers.list(phone_number=number, limit=1)
            if not found:
                raise SpecError(f"number {number}: this account does not own it (not among its incoming phone numbers)")
            sids[number] = found[0].sid
        return sids

    def _plan_origination(self, spec: TrunkSpec, trunk) -> list[Step]:
        steps = []
        existing = list(self._trunk().origination_urls.list()) if trunk is not None else []
        for want in spec.origination:
            have = _find(existing, sip_url=want.sip_url)
            if have is None:
                steps.append(
                    Step(
                        "+",
                        f"origination {want.sip_url} priority={want.priority} weight={want.weight}",
                        lambda w=want: self._trunk().origination_urls.create(
                            weight=w.weight,
                            priority=w.priority,
                            enabled=w.enabled,
                            friendly_name=f"{OURS} {w.sip_url}"[:64],
                            sip_url=w.sip_url,
                        ),
                    )
                )
                continue
            diff = {
                k: getattr(want, k) for k in ("priority", "weight", "enabled") if getattr(have, k) != getattr(want, k)
            }
            if diff:
                text = ", ".join(f"{k} {getattr(have, k)} -> {v}" for k, v in diff.items())
                steps.append(
                    Step(
                        "~",
                        f"origination {want.sip_url}: {text}",
                        lambda sid=have.sid, d=diff: self._trunk().origination_urls(sid).update(**d),
                    )
                )
            else:
                steps.append(Step("=", f"origination {want.sip_url} priority={want.priority} weight={want.weight}"))
        for have in existing:
            if any(w.sip_url == have.sip_url for w in spec.origination):
                continue
            if (have.friendly_name or "").startswith(OURS):
                steps.append(
                    Step(
                        "-",
                        f"origination {have.sip_url} (no longer asked for)",
                        lambda sid=have.sid: self._trunk().origination_urls(sid).delete(),
                    )
                )
            else:
                steps.append(
                    Step("=", f"origination {have.sip_url} left alone (not made by this tool: {have.friendly_name!r})")
                )
        return steps

    def _associated(self, trunk, kind: str) -> list:
        return list(getattr(self._trunk(), kind).list()) if trunk is not None else []

    def _plan_acl(self, spec: TrunkSpec, trunk) -> list[Step]:
        if not spec.termination_ips:
            return []
        steps = []
        acls = self.client.api.sip.ip_access_control_lists
        acl = _find(acls.list(), friendly_name=spec.acl_name)
        existing = []
        if acl is None:
            steps.append(
                Step(
                    "+",
                    f"IP access control list {spec.acl_name!r}",
                    lambda: setattr(self, "acl_sid", acls.create(friendly_name=spec.acl_name).sid),
                )
            )
        else:
            self.acl_sid = acl.sid
            existing = list(acls(acl.sid).ip_addresses.list())
            steps.append(Step("=", f"IP access control list {spec.acl_name!r} {acl.sid}"))
        wanted = [ipaddress.ip_network(c, strict=False) for c in spec.termination_ips]
        for net in wanted:
            have = next(
                (
                    a
                    for a in existing
                    if a.ip_address == str(net.network_address) and int(a.cidr_prefix_length) == net.prefixlen
                ),
                None,
            )
            if have is None:
                steps.append(
                    Step(
                        "+",
                        f"  address {net}",
                        lambda n=net: acls(self.acl_sid).ip_addresses.create(
                            friendly_name=f"{OURS} {n}",
                            ip_address=str(n.network_address),
                            cidr_prefix_length=n.prefixlen,
                        ),
                    )
                )
            else:
                steps.append(Step("=", f"  address {net}"))
        for have in existing:
            if not any(
                have.ip_address == str(n.network_address) and int(have.cidr_prefix_length) == n.prefixlen
                for n in wanted
            ):
                steps.append(
                    Step(
                        "-",
                        f"  address {have.ip_address}/{have.cidr_prefix_length} (no longer asked for)",
                        lambda sid=have.sid: acls(self.acl_sid).ip_addresses(sid).delete(),
                    )
                )
        steps.append(
            self._link_step(
                trunk,
                acl,
                spec.acl_name,
                "ip_access_control_lists",
                lambda: self._trunk().ip_access_control_lists.create(ip_access_control_list_sid=self.acl_sid),
            )
        )
        return steps

    def _link_step(self, trunk, found, name: str, kind: str, create: Callable[[], object]) -> Step:
        """The step that associates the list ``found`` (``None``: being created) with the
        trunk for termination, unless it already is."""
        if found is not None and _find(self._associated(trunk, kind), sid=found.sid) is not None:
            return Step("=", f"trunk uses {name!r} for termination")
        return Step("+", f"trunk uses {name!r} for termination", create)

    def _plan_credentials(self, spec: TrunkSpec, trunk) -> list[Step]:
        if not spec.termination_user:
            return []
        steps = []
        lists = self.client.api.sip.credential_lists
        cl = _find(lists.list(), friendly_name=spec.credentials_name)
        user = None
        if cl is None:
            steps.append(
                Step(
                    "+",
                    f"credential list {spec.credentials_name!r}",
                    lambda: setattr(self, "cl_sid", lists.create(friendly_name=spec.credentials_name).sid),
                )
            )
        else:
            self.cl_sid = cl.sid
            steps.append(Step("=", f"credential list {spec.credentials_name!r} {cl.sid}"))
            creds = list(lists(cl.sid).credentials.list())
            user = _find(creds, username=spec.termination_user)
            for other in creds:
                if other.username != spec.termination_user:
                    steps.append(
                        Step(
                            "-",
                            f"  user {other.username!r} (no longer asked for)",
                            lambda sid=other.sid: lists(self.cl_sid).credentials(sid).delete(),
                        )
                    )
        if user is None:
            steps.append(
                Step(
                    "+",
                    f"  user {spec.termination_user!r}",
                    lambda: lists(self.cl_sid).credentials.create(
                        username=spec.termination_user, password=spec.termination_password
                    ),
                )
            )
        elif spec.rotate_password:
            steps.append(
                Step(
                    "~",
                    f"  user {spec.termination_user!r}: new password",
                    lambda sid=user.sid: lists(self.cl_sid).credentials(sid).update(password=spec.termination_password),
                )
            )
        else:
            steps.append(
                Step(
                    "=",
                    f"  user {spec.termination_user!r} (its password cannot be read back; --rotate-password sets it)",
                )
            )
        steps.append(
            self._link_step(
                trunk,
                cl,
                spec.credentials_name,
                "credentials_lists",
                lambda: self._trunk().credentials_lists.create(credential_list_sid=self.cl_sid),
            )
        )
        return steps

    def _plan_numbers(self, spec: TrunkSpec, trunk, sids: dict[str, str]) -> list[Step]:
        steps = []
        existing = self._associated(trunk, "phone_numbers")
        for number, sid in sids.items():
            if _find(existing, sid=sid) is not None:
                steps.append(Step("=", f"number {number}"))
            else:
                steps.append(
                    Step(
                        "+",
                        f"number {number} ({sid})",
                        lambda s=sid: self._trunk().phone_numbers.create(phone_number_sid=s),
                    )
                )
        for have in existing:
            if have.sid not in sids.values():
                steps.append(
                    Step(
                        "=",
                        f"number {have.phone_number} left on the trunk (not asked for; remove it in the console if it should go)",
                    )
                )
        return steps

    # ---------------------------------------------------------------- remove

    def plan_remove(self, spec: TrunkSpec) -> list[Step]:
        """Steps that delete what :meth:`plan` made for ``spec.name``."""
        steps = []
        trunk = _find(self.client.trunking.v1.trunks.list(), friendly_name=spec.name)
        if trunk is not None:
            numbers = [n.phone_number for n in self.client.trunking.v1.trunks(trunk.sid).phone_numbers.list()]
            extra = f", releasing {', '.join(numbers)}" if numbers else ""
            steps.append(
                Step(
                    "-",
                    f"trunk {spec.name!r} {trunk.sid} with its origination URLs{extra}",
                    lambda: self.client.trunking.v1.trunks(trunk.sid).delete(),
                )
            )
        acl = _find(self.client.api.sip.ip_access_control_lists.list(), friendly_name=spec.acl_name)
        if acl is not None:
            steps.append(
                Step(
                    "-",
                    f"IP access control list {spec.acl_name!r} {acl.sid}",
                    lambda: self.client.api.sip.ip_access_control_lists(acl.sid).delete(),
                )
            )
        cl = _find(self.client.api.sip.credential_lists.list(), friendly_name=spec.credentials_name)
        if cl is not None:
            steps.append(
                Step(
                    "-",
                    f"credential list {spec.credentials_name!r} {cl.sid}",
                    lambda: self.client.api.sip.credential_lists(cl.sid).delete(),
                )
            )
        return steps
