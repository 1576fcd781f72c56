"""What the caller asked for, decided in code: the rule behind every call-control tool.

The embedded model is a 270M base model; it must not be able to hang up on a
caller who asked a question, or transfer one who did not ask for a person
(seen: "Sorry to interrupt, but are you open on Sunday?" was answered
"You're welcome, have a great day. Goodbye!" and the call ended). So:

- ``end_call`` happens only when :func:`wants_to_end` says the caller took leave;
- ``transfer`` only when :func:`wants_person` finds an explicit request;
- ``collect_digits`` only when :func:`about_existing_record` finds the caller
  talking about an existing appointment or account.

The functions read the final transcript (Whisper punctuates: a ``?`` marks a
question). They are deliberately narrow: a missed goodbye costs the caller one
more sentence, a false one costs the call.
"""

from __future__ import annotations

import re

_FAREWELL = re.compile(
    r"\b(good ?-?bye|bye(?: now| bye)?|that'?s (?:all|it|everything)(?: for (?:now|today))?|that is (?:all|it|everything)|"
    r"nothing else|have a (?:nice|good|great) (?:day|one|evening|afternoon)|"
    r"talk to you later|see you)\b",
    re.I,
)
_GOING_ON = re.compile(r"\b(wait|actually|one more|also|another|but)\b", re.I)
_QUESTION_START = re.compile(
    r"^\s*(what|when|where|who|why|how|can|could|do|does|did|are|is|will|would|should|may)\b", re.I
)

_PERSON = re.compile(
    r"\b(?:speak|talk|talking|speaking)\s+(?:to|with)\s+(?:a |an |the |some |your )?(?:real |actual |live )?"
    r"(?:person|human|human being|someone|somebody|anyone|anybody|manager|supervisor|operator|representative|agent|staff|colleague|receptionist|dentist|doctor|billing)\b"
    r"|\b(?:transfer|connect|put)\s+me\b"
    r"|\b(?:transfer|connect|put)\b.*?\b(?:to|with)\s+(?:a |an |the |some |your )?(?:real |actual |live )?"
    r"(?:person|human|someone|somebody|manager|supervisor|operator|representative|agent|billing|reception|front desk)\b"
    r"|\b(?:a|an)\s+(?:real |actual |live )?(?:person|human|operator|representative),?\s+(?:please|now)\b"
    r"|^\W*(?:operator|representative|human|agent)\W*(?:please)?\W*$",
    re.I,
)

_RECORD = re.compile(
    r"\b(?:my|existing|current|our)\s+(?:\w+\s+)?(?:appointment|booking|account|record|records|patient number|bill)s?\b"
    r"|\b(?:reschedule|cancel|move|change|check|confirm)\b.*\bappointment\b",
    re.I,
)


_DECLINE = re.compile(
    r"^\W*(no|nope|nah|no thanks|no thank you|i'?m good|i am good|all good|i'?m fine|that'?s fine)\W*(thanks|thank you)?\W*$",
    re.I,
)


def wants_to_end(text: str, after_anything_else: bool = False) -> bool:
    """Whether the caller takes leave ("thanks, goodbye", "no, that's all"), and asks nothing more.

    A farewell followed by a question ("bye the way, are you open on Sunday?")
    is not one: the text must carry no ``?`` after the farewell and the clause
    after it must not start like a question. ``after_anything_else``: the agent
    just asked whether the caller needs anything else, so a plain "no" (or "no
    thanks", "I'm good") confirms the end too.
    """
    if after_anything_else and _DECLINE.match(text):
        return True
    farewells = list(_FAREWELL.finditer(text))
    if not farewells:
        return False
    m = farewells[-1]  # the last farewell: what follows it decides
    after = text[m.end() :]
    if "?" in after or _GOING_ON.search(after):
        return False
    return not any(_QUESTION_START.match(part) for part in re.split(r"[.!,;]", after) if part.strip())


def wants_person(text: str) -> bool:
    """Whether the caller explicitly asks to be put through to a person ("can I talk
    to a human?", "transfer me to billing", "operator, please")."""
    return bool(_PERSON.search(text))


def about_existing_record(text: str) -> bool:
    """Whether the caller talks about an existing appointment or account (so asking
    for a patient number on the keypad makes sense)."""
    return bool(_RECORD.search(text))
