"""Calling windows, pure: whether a number may be called at an instant, in every one of
its time zones (``phonenumbers.timezone``), and when it next may. Times are aware
``datetime`` values passed in; nothing here reads a clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ..config import CampaignSettings


def time_zones(number: str) -> list[ZoneInfo]:
    """The time zones of an E.164 number (``phonenumbers.timezone``); UTC when unknown."""
    import phonenumbers
    from phonenumbers import timezone as pn_timezone

    try:
        names = pn_timezone.time_zones_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        names = ()
    zones = []
    for name in names:
        try:
            zones.append(ZoneInfo(name))
        except (KeyError, ValueError, OSError):
            continue
    return zones or [ZoneInfo("UTC")]


def _hhmm(text: str) -> tuple[int, int]:
    h, m = text.split(":")
    return int(h), int(m)


def window_open(zones: list[ZoneInfo], now: datetime, settings: CampaignSettings) -> bool:
    """Whether ``now`` (aware) is inside the calling window in every one of ``zones``."""
    start, end = _hhmm(settings.window_start), _hhmm(settings.window_end)
    for zone in zones:
        local = now.astimezone(zone)
        if local.isoweekday() not in settings.window_days or not (start <= (local.hour, local.minute) < end):
            return False
    return True


def next_window(zones: list[ZoneInfo], now: datetime, settings: CampaignSettings) -> datetime:
    """The first moment at or after ``now`` when :func:`window_open` holds (searched in
    5-minute steps over 8 days; ``now`` + 1 day if none)."""
    t = now
    for _ in range(8 * 24 * 12):
        if window_open(zones, t, settings):
            return t
        t = (t + timedelta(minutes=5)).replace(second=0, microsecond=0)
        t -= timedelta(minutes=t.minute % 5)
    return now + timedelta(days=1)
