"""Redaction of what ASR writes: the shapes Whisper gives numbers and addresses in."""

from __future__ import annotations

import logging

import pytest

from bridge.privacy import RedactingFilter, Redactor

ALL = Redactor(["card", "ssn", "phone", "email"])


@pytest.mark.parametrize(
    "heard, stored",
    [
        ("My card number is 4111 1111 1111 1111.", "My card number is [card]."),
        ("It's 4111-1111-1111-1111", "It's [card]"),
        # Whisper base on a Piper voice through G.711: groups heard twice, a comma inside.
        ("My card number is 4,111 1111 1111 11 11 11 11 11", "My card number is [card]"),
        ("four one one one one one one one one one one one one one one one", "[card]"),
        ("my social is 123-45-6789", "my social is [ssn]"),
        ("call me at +1 (415) 555-0100", "call me at [phone]"),
        ("it is jane.doe@example.com or jane at example dot com", "it is [email] or [email]"),
        ("the last four are 1111", "the last four are 1111"),
        ("my patient number is 4521, at 10:30 for $80", "my patient number is 4521, at 10:30 for $80"),
        ("one or two", "one or two"),
    ],
)
def test_numbers_and_addresses_as_asr_writes_them(heard, stored):
    assert ALL(heard) == stored


def test_only_the_configured_kinds_are_masked():
    assert Redactor(["email"])("4111 1111 1111 1111 to a@b.io") == "4111 1111 1111 1111 to [email]"
    assert not Redactor([]) and Redactor([])("4111 1111 1111 1111") == "4111 1111 1111 1111"
    with pytest.raises(ValueError, match="unknown redaction kinds"):
        Redactor(["iban"])


def test_log_lines_are_masked_before_any_handler_writes_them():
    record = logging.LogRecord(
        "bridge", logging.INFO, __file__, 1, "caller said %r", ("card 4111 1111 1111 1111",), None
    )
    assert RedactingFilter(ALL).filter(record) and record.getMessage() == "caller said 'card [card]'"
