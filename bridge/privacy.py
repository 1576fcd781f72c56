"""Redaction of personal data in transcripts (before they are stored) and in log lines
(``privacy.redact``).

Kinds, and what each masks (a transcript is what ASR wrote, so digits may come as
digits with spaces, dashes or dots between groups, or as words: "four one one one"):

- ``card``: a run of 13 to 19 digits (payment card numbers, ISO/IEC 7812), or longer
  (ASR repeats digit groups: "4111 1111 1111 11 11 11 11 11"), and any
  run of 8 to 12 digits that no other configured kind claims: ASR's interim passes
  and a misheard digit give partial numbers, and those must not get through either.
  No Luhn check, for the same reason. Shorter runs stay (a card's first six or last
  four digits may be shown, PCI DSS 3.4).
- ``ssn``: a run of exactly 9 digits (US Social Security number, usually 3-2-4).
- ``phone``: a run of 10 to 12 digits, with an optional leading ``+`` (E.164 and
  North American numbers).
- ``email``: ``name@host.tld``, and the spoken form ``name at host dot com``.

Each match becomes ``[card]``, ``[ssn]``, ``[phone]`` or ``[email]``. Runs of other
lengths (a 4-digit patient number, a time, a price) are left alone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

KINDS = ("card", "ssn", "email", "phone")

_DIGIT_WORDS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_TOKEN = r"(?:\d+|" + "|".join(sorted(_DIGIT_WORDS, key=len, reverse=True)) + r")"
#: Digit groups or digit words joined by spaces, dashes, dots, commas, slashes or parentheses.
_RUN = re.compile(rf"(?<![\w@])\+?\(?{_TOKEN}(?:[ \t\-./,()]{{1,3}}{_TOKEN})*(?![\w@])", re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_SPOKEN_EMAIL = re.compile(r"\b[\w.+-]+ at [\w-]+(?: dot [\w-]+)+\b", re.I)


def _digits(run: str) -> str:
    out = []
    for token in re.findall(_TOKEN, run, re.I):
        out.append(token if token.isdigit() else _DIGIT_WORDS[token.lower()])
    return "".join(out)


class Redactor:
    """Masks the configured kinds of personal data in text.

    Args:
        kinds: any of :data:`KINDS`.

    Raises:
        ValueError: an unknown kind.
    """

    def __init__(self, kinds: Iterable[str]) -> None:
        self.kinds = frozenset(kinds)
        unknown = self.kinds - set(KINDS)
        if unknown:
            raise ValueError(f"unknown redaction kinds {sorted(unknown)}; known: {', '.join(KINDS)}")

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def __call__(self, text: str) -> str:
        """``text`` with every configured kind masked."""
        if not self.kinds or not text:
            return text
        if "email" in self.kinds:
            text = _EMAIL.sub("[email]", text)
            text = _SPOKEN_EMAIL.sub("[email]", text)
        if self.kinds & {"card", "ssn", "phone"}:
            text = _RUN.sub(self._run, text)
        return text

    def _run(self, match: re.Match) -> str:
        run = match.group(0)
        digits = _digits(run)
        if not any(c.isdigit() for c in run) and len(digits) < 9:
            return run  # "one or two": words only, too short to be a number
        n = len(digits)
        if n >= 13 and "card" in self.kinds:
            return "[card]"  # longer than 19: ASR heard a digit group twice, or two numbers ran together
        if n == 9 and "ssn" in self.kinds:
            return "[ssn]"
        if 10 <= n <= 12 and "phone" in self.kinds:
            return "[phone]"
        if 8 <= n <= 19 and "card" in self.kinds:
            return "[card]"  # part of a card number
        return run


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's formatted message (and its exception
    text), so that no handler writes the masked data. Attach it to the handlers."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redactor(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction(kinds: Iterable[str]) -> Redactor:
    """Redact ``kinds`` in every log line from now on (root logger's handlers). Returns the redactor."""
    redactor = Redactor(kinds)
    if redactor:
        flt = RedactingFilter(redactor)
        for handler in logging.getLogger().handlers:
            handler.addFilter(flt)
    return redactor
