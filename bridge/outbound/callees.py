"""A campaign's input: the callee file (CSV, one E.164 ``number`` a row, the other columns
the callee's variables) and the do-not-call file, numbers checked with ``phonenumbers``."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CalleeRow:
    """One row of a campaign file: ``row`` (1 = the first after the header), the E.164
    ``number`` and the other columns as ``variables``."""

    row: int
    number: str
    variables: dict[str, str]


def e164(text: str) -> str | None:
    """``text`` as an E.164 number (``+14155550100``) if ``phonenumbers`` finds it a valid
    international number, else ``None``."""
    import phonenumbers

    try:
        parsed = phonenumbers.parse(text.strip(), None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def read_callees(path: str | Path) -> tuple[list[CalleeRow], list[str]]:
    """The callees of a CSV file with a header row that has a ``number`` column.
    Returns ``(callees, problems)``: a row whose number is not valid E.164, or repeats
    an earlier row's, is left out and named in ``problems``.

    Raises:
        ValueError: no ``number`` column.
        OSError: the file cannot be read.
    """
    callees, problems, seen = [], [], set()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "number" not in [n.strip() for n in reader.fieldnames]:
            raise ValueError(f"{path}: the header needs a 'number' column")
        for i, raw in enumerate(reader, start=1):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            number = e164(row.get("number", ""))
            if number is None:
                problems.append(f"row {i}: {row.get('number', '')!r} is not a valid E.164 number")
                continue
            if number in seen:
                problems.append(f"row {i}: {number} repeats an earlier row")
                continue
            seen.add(number)
            callees.append(CalleeRow(i, number, {k: v for k, v in row.items() if k and k != "number"}))
    return callees, problems


def read_dnc_file(path: str | Path | None) -> set[str]:
    """The numbers of a do-not-call file: one a line, ``#`` starts a comment; numbers
    are normalized to E.164 where they parse.

    Raises:
        OSError: the file cannot be read.
    """
    if not path:
        return set()
    numbers = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            numbers.add(e164(text) or text)
    return numbers
