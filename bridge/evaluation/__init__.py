"""Conversation quality: the evaluation set, its scoring, and ``bridge bench answers``.

- :mod:`.evalset`: load ``config/eval/*.yaml`` (conversations of caller turns,
  each with the facts its reply must and must not contain and the tool it expects);
- :mod:`.scoring`: score one reply (accuracy, degenerate output, tool misfires), WER;
- :mod:`.voices`: the caller's voices (Piper, espeak-ng; normal and fast), through G.711;
- :mod:`.harness`: one conversation through the real pipeline (VAD, ASR, prompt,
  LLM, tool parsing, TTS), in process, on a call leg that records what it is asked;
- :mod:`.report`: results by category, as a table and JSON.

This measures; it asserts nothing (tests never assert wall-clock times).
"""
