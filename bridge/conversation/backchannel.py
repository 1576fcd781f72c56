"""Telling a backchannel from an interruption (false barge-ins).

Callers say "mm-hmm", "okay", "right" while the agent talks, and cough; none of
these asks the agent to stop. 200 ms of caller speech cannot tell them from
"wait, I meant Tuesday", so a barge-in is decided in two steps
(:class:`bridge.conversation.engine.Conversation`):

1. **pause** at ``barge_in_min_speech_ms`` of caller speech: playout stops at
   the next packet (the caller hears the agent stop at once), but nothing is
   dropped and the LLM and TTS go on;
2. **confirm** (the barge-in proper: queue dropped, LLM/TTS cancelled, history
   cut to what was played, docs/turn-taking.md) as soon as a transcript of the
   utterance holds words that are not a backchannel: its interim transcript, the
   pass made once the caller has spoken for ``barge_in_confirm_ms``, or its final
   transcript; or **resume** where playout stopped when that pass, or the final
   transcript of an utterance that ended sooner, is a backchannel or no words at
   all (a cough, steady noise the VAD calls speech). A resumed utterance that goes
   on can still interrupt by its later words. The played-sample count never
   included what was not sent, so history truncation stays exact.

This is LiveKit Agents' "resume false interruption", decided here on the
utterance's duration and its words.
"""

from __future__ import annotations

import re

#: Words that make up backchannels and acknowledgements, and the interjections
#: Whisper writes for a cough or a breath ("Ow.", "Pfft.") (lowercase). An utterance
#: of at most :data:`MAX_WORDS` of these does not interrupt. "no", "wait", "stop"
#: and every question word are deliberately absent.
BACKCHANNEL_WORDS = frozenset(
    """mm mmm mhm mm-hmm mhmm hmm hm uh-huh uh huh um ah oh ooh aha okay ok kay right yeah yes yep yup ya
    sure alright all got it i see cool great good nice fine wow gotcha understood thank thanks you
    ow ouch pfft psst phew ugh ahem""".split()
)
#: Longest backchannel, in words.
MAX_WORDS = 4

#: A hum however Whisper spells it: "m", "mmm", "hm", "mhm", "hmmm".
_HUM = re.compile(r"[mh]+")
_NON_SPEECH = re.compile(r"[\[(*][^\])*]*[\])*]")  # Whisper's "[coughing]", "(coughs)", "*sigh*"
_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")


def words_of(text: str) -> list[str]:
    """The spoken words of a transcript, lowercase, without Whisper's non-speech
    annotations (``[coughing]``, ``(laughs)``) and punctuation."""
    return _WORD.findall(_NON_SPEECH.sub(" ", text.lower()))


def is_backchannel(
    text: str, vocabulary: frozenset[str] = BACKCHANNEL_WORDS, prompt_words: frozenset[str] = frozenset()
) -> bool:
    """Whether a caller transcript heard over the agent is no interruption: no
    words at all (a cough, a noise), or at most :data:`MAX_WORDS` words that are
    all in ``vocabulary`` ("Mm-hmm.", "Okay, right.", "Uh-huh, yeah").

    ``vocabulary`` words may be hyphenated ("mm-hmm"); a hyphenated word also
    counts when each of its parts is in the vocabulary or a hum (``m``, ``mmm``,
    ``hm``: Whisper spells "mm-hmm" "M-M-M" or "Mm-m" on a phone line).

    Two shapes of Whisper's own noise count as no words too: single letters only
    ("M. M. D.": faster-whisper base spells a hum so), and only words of its initial
    prompt (``prompt_words``, lowercase: the agent's names and terms,
    :mod:`bridge.engines.asr_hints`): given a cough, Whisper writes "Dr. Patel," from
    the prompt it was primed with.
    """
    words = words_of(text)
    if words and all(len(w.replace("-", "")) == 1 for w in words):
        return True
    if words and prompt_words and all(w in prompt_words or w in vocabulary for w in words):
        return True
    if len(words) > MAX_WORDS:
        return False
    return all(
        w in vocabulary or all(part in vocabulary or _HUM.fullmatch(part) for part in w.split("-")) for w in words
    )
