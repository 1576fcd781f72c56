"""Settings of the models and of the agent that talks (``models:``, ``agent:`` in
``config/default.yaml``): which models run where, and how the agent takes turns,
barges in, speaks and uses its tools."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import BaseModel, ConfigError


class ModelSettings(BaseModel):
    """Which models to load; ``embedded`` means the PyPI model packages."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    asr: str = "embedded-base"
    asr_compute_type: str = "int8"
    asr_beam_size: int = 1
    #: Whisper's initial prompt: ``auto`` builds it from the agent's vocabulary (the
    #: names and terms in its persona and facts, bridge/engines/asr_hints.py), ``""``
    #: is none, anything else is used as it is.
    asr_prompt: str = "auto"
    #: Batch the ASR passes of calls whose turns end together (one model, no lock
    #: between calls): ``auto`` = batches of up to 8 on CUDA, 4 on the CPU; 0 = never;
    #: N = batches of up to N (bridge/engines/asr_batch.py).
    asr_batch: Literal["auto"] | int = "auto"
    #: Encoder windows a pass is padded to, seconds (the smallest that holds the audio
    #: ``asr_window_headroom`` times over; bridge/engines/asr_batch.py). [30] is
    #: faster-whisper's fixed window.
    asr_windows: list[int] = Field(default_factory=lambda: [10, 20, 30])
    asr_window_headroom: float = Field(default=2.0, ge=1.0)
    llm: str = "embedded"
    #: ``llama_cpp`` (in process, ``llm`` names the GGUF) or ``openai`` (an
    #: OpenAI-compatible server: llama.cpp's server, vLLM, ...).
    llm_backend: Literal["llama_cpp", "openai"] = "llama_cpp"
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_model: str = "default"
    openai_api_key: str = ""
    #: Seconds to wait for the server's connection and between streamed chunks.
    openai_timeout: float = 10.0
    llm_threads: int = 2
    #: Context length in tokens, per sequence (a call's prompt and reply).
    llm_context: int = 2048
    #: In-process llama.cpp: calls' turns decoded together as sequences of one batch
    #: (bridge/engines/llm.py): ``auto`` = 8 on CUDA, 4 on the CPU; 1 = one at a time.
    llm_parallel: Literal["auto"] | int = "auto"
    llm_gpu_layers: int = -1
    tts: str = "embedded"
    #: Where the embedded GGUF is assembled (from its 4 chunk packages).
    cache_dir: str = "models"

    @field_validator("asr_windows")
    @classmethod
    def _check_windows(cls, value: list[int]) -> list[int]:
        if not value or any(not 1 <= w <= 30 for w in value) or 30 not in value:
            raise ValueError(f"{value}: windows are 1..30 seconds and must include 30 (Whisper's full window)")
        return sorted(set(value))

    @model_validator(mode="after")
    def _check_paths(self) -> ModelSettings:
        for name in ("asr", "tts") + (("llm",) if self.llm_backend == "llama_cpp" else ()):
            value = getattr(self, name)
            if value not in ("embedded", "embedded-base") and not Path(value).exists():
                raise ConfigError(f"models.{name}", f"no such file or directory: {value} (or 'embedded')")
            if value == "embedded-base" and name != "asr":
                raise ConfigError(f"models.{name}", "'embedded-base' is an ASR model (faster-whisper base)")
        return self


class AgentSettings(BaseModel):
    """The agent: persona, prompt, turn-taking."""

    #: ``llm``: the conversation on the models; ``echo``: play the caller's audio
    #: back (a PBX-style echo test, to measure signalling and media without models).
    kind: Literal["llm", "echo"] = "llm"
    name: str = "Sam"
    llm_mode: Literal["completion", "chat"] = "completion"
    persona: str = ""
    #: Facts the agent answers from, one or two sentences each, written into the
    #: prompt as a block (bridge/conversation/prompt.py). Keep them short: a 270M
    #: model copies what it reads. A list, so a config file replaces it whole.
    facts: list[str] = Field(default_factory=list)
    examples: list[tuple[str, str]] = Field(default_factory=list)
    #: Completion mode: write the fact most relevant to each caller line right
    #: above it (bridge/conversation/facts.py), for the examples and the live turn.
    fact_lookup: bool = True
    #: History entries (caller and agent lines) kept in the prompt: a bounded
    #: window, so one bad turn does not poison the rest of the call.
    history_turns: int = Field(default=4, ge=0, le=40)
    #: Sentences per reply; generation stops after them (bridge/conversation/guards.py).
    max_sentences: int = Field(default=2, ge=1, le=10)
    #: Said instead of a reply the guards rejected entirely (a loop, a leaked line, nothing).
    fallback: str = "Sorry, could you say that again?"
    #: llama.cpp sampling penalties against loops (1.0 / 0.0 = off).
    repeat_penalty: float = Field(default=1.1, ge=1.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=0.0, le=2.0)
    greeting: str = "Hello, thanks for calling. How can I help you?"
    goodbye: str = "Thanks for calling. Goodbye!"
    max_tokens: int = 48
    temperature: float = 0.3
    #: ``webrtc`` (webrtcvad) or ``silero`` (Silero VAD v6 ONNX from faster-whisper).
    vad: Literal["webrtc", "silero"] = "webrtc"
    #: webrtcvad aggressiveness 0..3.
    vad_aggressiveness: int = 2
    #: Silero speech probability threshold.
    silero_threshold: float = 0.5
    #: End of turn (bridge/conversation/turntaking.py). Silence that ends a turn while
    #: the end-of-turn signals are not in yet, milliseconds.
    endpoint_silence_ms: int = 700
    #: ... when every signal says the turn is finished.
    endpoint_fast_ms: int = 200
    #: ... when one says it is not (words such as "and", "for", "um"; the language model;
    #: the end-of-turn model): the longest pause the caller gets to go on.
    endpoint_slow_ms: int = 1800
    #: Silence after which the speculative pass starts: the transcript, the end-of-turn
    #: scores, and a reply prepared unheard (released at the end of the turn).
    speculate_after_ms: int = 100
    #: Below this probability that the caller's line ends where the transcript stops
    #: (the language model's next token, bridge/engines/llm.py), the turn is unfinished;
    #: 0 = not asked. Completion mode on in-process llama.cpp only.
    turn_text_threshold: float = Field(default=0.03, ge=0.0, le=1.0)
    #: At or above this end-of-line probability the language model is sure the line is
    #: over (``endpoint_fast_ms``); between the two it is unsure (``turn_short_words``).
    turn_text_sure: float = Field(default=0.3, gt=0.0, le=1.0)
    #: A line the language model is unsure of with at most this many words is a short
    #: answer ("Mornings.", "No, thanks.": ``endpoint_fast_ms``); a longer one waits
    #: ``endpoint_slow_ms`` (on the turn evaluation's tuning part every pause read there
    #: had 4 words or more, every short line there was a complete answer).
    turn_short_words: int = Field(default=2, ge=0)
    #: Below this end-of-turn probability from the audio (Smart Turn v3,
    #: bridge/engines/turn.py; pip extra ``turn``), the turn is unfinished; 0 = the model
    #: is not loaded (the default: on the evaluation set's synthetic voices it read 101
    #: of 176 moments right, against 155 for the language model; docs/turn-taking.md).
    turn_audio_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    #: Speak a reply's first clause (up to a ",", ";" or ":") once it has this many
    #: words, before its sentence is complete; 0 = whole sentences only.
    first_clause_words: int = Field(default=4, ge=0)
    #: Interim transcripts while the caller speaks over the agent (their words confirm
    #: a barge-in): one pass per this much new speech (at most one in flight), over at
    #: most ``interim_window_s``; 0 = off.
    interim_interval_ms: int = 1000
    interim_window_s: float = 10.0
    #: Interim passes also while the caller speaks to a quiet agent (logs, inspection):
    #: off by default, since a pass in flight when the caller stops holds the
    #: speculative pass back.
    interim_always: bool = False
    #: Speech shorter than this is ignored (clicks, coughs), milliseconds.
    min_utterance_ms: int = 200
    #: Caller speech during agent speech that pauses it (playout stops at the next
    #: packet), milliseconds (bridge/conversation/backchannel.py).
    barge_in_min_speech_ms: int = 200
    #: A paused agent is interrupted for good (queue dropped, LLM/TTS cancelled,
    #: history cut) once the caller has spoken this long, or said words that are not
    #: a backchannel; after a backchannel ("mm-hmm", "okay") or no words (a cough) it
    #: resumes where it stopped. Milliseconds; 0 = every barge-in is final at once.
    barge_in_confirm_ms: int = Field(default=700, ge=0)
    #: Words heard over the agent that Whisper was this unsure of (average token log
    #: probability below it) do not interrupt it: a hum or a cough it guessed words for
    #: (config/bargein tuning part: interruptions -0.54 at worst, hums and coughs -0.70
    #: and below). -10 = trust every transcript.
    barge_in_min_logprob: float = -0.65
    #: ...but only when they are this few words: a hum or a cough comes out as a word or
    #: two ("Amanda.", "Pup."), while a sentence heard through echo or line noise can be
    #: just as unsure ("I'll see you open on Saturday.") and is still a caller speaking.
    barge_in_unsure_max_words: int = Field(default=3, ge=0)
    #: ...or when they are more words than the caller's voiced speech could carry at this
    #: many words a second (a 0.3 s cough heard as "I'm going to get you." is 15 a second;
    #: fast speech is about 4).
    barge_in_unsure_words_per_s: float = Field(default=6.0, gt=0)
    #: Words a backchannel is made of (lowercase); empty: the built-in list
    #: (bridge.conversation.backchannel.BACKCHANNEL_WORDS).
    backchannel_words: list[str] = Field(default_factory=list)
    #: Do not count the agent's own voice coming back (echo) as caller speech.
    echo_guard: bool = True
    #: Normalized correlation with recently sent audio above which a frame is echo.
    echo_threshold: float = 0.55
    #: The longest echo path considered, milliseconds.
    echo_max_delay_ms: int = 600
    #: Audio kept before the first voiced frame, milliseconds.
    preroll_ms: int = 300
    #: Hang up (after saying ``goodbye``) once the call is this long, seconds; 0 = never.
    max_call_seconds: float = 0
    #: Regex: when the agent's reply matches it, the agent hangs up after saying it.
    end_call_pattern: str = r"\b(goodbye|good bye|bye now)\b"
    #: Tools the model may use: end_call, transfer, collect_digits (see bridge/engines/tools.py).
    tools: list[str] = Field(default_factory=lambda: ["end_call", "transfer", "collect_digits"])
    #: Completion-mode examples that teach the tool convention (caller line, agent line with [command]).
    tool_examples: list[tuple[str, str]] = Field(default_factory=list)
    #: Seconds of silence on both sides before the agent asks if the caller is there; 0 = never.
    reprompt_after_s: float = 8.0
    reprompt: str = "Are you still there?"
    #: Unanswered reprompts before the agent says goodbye and hangs up.
    max_reprompts: int = 2
    #: Seconds to wait for the digits after a collect_digits request.
    digits_timeout_s: float = 15.0
    #: What the agent says when ASR, the LLM or TTS fails during a turn...
    error_apology: str = "Sorry, I am having trouble right now."
    #: ...and then: ``continue`` (listen), ``transfer`` (to transfer.target) or ``end_call``.
    on_engine_error: Literal["continue", "transfer", "end_call"] = "continue"

    @model_validator(mode="after")
    def _check_turn_model(self) -> AgentSettings:
        if self.turn_audio_threshold > 0:
            import importlib.util

            if importlib.util.find_spec("pipecat") is None:
                raise ConfigError(
                    "agent.turn_audio_threshold",
                    "the Smart Turn model comes with pipecat-ai: pip install 'bridge[turn]'",
                )
        return self
