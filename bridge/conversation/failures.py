"""Engine failures inside a turn: never silence.

When ASR, the LLM or TTS raises (a model error, an OpenAI-compatible server
answering 5xx, refusing the connection or timing out), the turn's stage wraps
it in :class:`EngineError`. The conversation then counts it
(``bridge_engine_errors_total{stage}``), logs it once per call and stage with
the call id, says ``agent.error_apology`` and does ``agent.on_engine_error``:
``continue`` (listen for the next turn), ``transfer`` (to ``transfer.target``)
or ``end_call``.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: The stages that can fail, as the ``stage`` label of ``bridge_engine_errors_total``.
STAGES = ("asr", "llm", "tts")


class EngineError(Exception):
    """An engine failed during a turn.

    Attributes:
        stage: ``asr``, ``llm`` or ``tts``.
        cause: the engine's exception.
    """

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {cause.__class__.__name__}: {cause}")
        self.stage = stage
        self.cause = cause


async def awaited(stage: str, future: asyncio.Future[Any]) -> Any:
    """Await an engine future (speculative ASR, :meth:`bridge.conversation.work.WorkerThreads.call`):
    its exception becomes :class:`EngineError`."""
    try:
        return await future
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise EngineError(stage, exc) from exc
