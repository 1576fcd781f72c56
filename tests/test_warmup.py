"""At start every model runs once the way a call uses it (bridge/warmup.py), so
the first caller's first turn pays no first-run cost: checked on what the models hold,
never on time."""

from __future__ import annotations

import pytest

from bridge.config import load_settings
from bridge.conversation.prompt import build_completion_prompt
from bridge.engines import load_engines
from bridge.warmup import warm_engines

from .conftest import ROOT

pytestmark = pytest.mark.slow  # loads the real models


def test_warm_up_runs_every_model_as_a_call_uses_it():
    settings = load_settings(overrides={"models": {"cache_dir": str(ROOT / "models")}})
    agent = settings.agent
    engines = load_engines(settings)
    phrases = (agent.greeting, agent.goodbye, agent.reprompt, agent.fallback, agent.error_apology)
    batcher = engines.asr.batcher
    try:
        assert (
            all(engines.phrases.peek(p) is None for p in phrases) and not batcher.by_window and engines.llm.steps == 0
        )
        spent = warm_engines(engines, agent)
        assert set(spent) == {"tts", "asr", "llm"}
        # every phrase the agent says without the LLM is synthesized already
        assert all(engines.phrases.peek(p) is not None for p in phrases)
        # an ASR pass ran in every encoder window
        assert set(batcher.by_window) == set(batcher.windows)
        # the LLM holds the persona, facts and examples in its KV cache, and decoded a reply
        assert engines.llm.cached(build_completion_prompt(agent, []))
        assert engines.llm.steps > 1
    finally:
        batcher.close()
        engines.llm.close()
