"""Smart Turn v3 from the pipecat-ai wheel (bridge/engines/turn.py): loaded by path,
it tells a phrase cut after "because" from a finished question on phone audio."""

from __future__ import annotations

import numpy as np

from bridge.engines.turn import SmartTurn, smart_turn_files
from bridge.evaluation.voices import voice


def test_the_model_and_its_features_come_from_the_wheel_without_importing_pipecat():
    import sys

    model, features = smart_turn_files()
    assert model.name == "smart-turn-v3.2-cpu.onnx" and model.stat().st_size > 8_000_000
    assert features.name == "_whisper_features.py"
    SmartTurn()
    assert "pipecat" not in sys.modules  # its framework (logging, banner) stays out of the server


def test_it_hears_an_unfinished_phrase_on_a_phone_line(engines):
    model = SmartTurn()
    speak = voice("piper", engines.tts, deterministic=True)
    silence = np.zeros(800, np.int16)
    finished = model.probability(np.concatenate([speak("What time do you open on Saturday?"), silence]))
    unfinished = model.probability(np.concatenate([speak("My daughter needs to see someone because,"), silence]))
    assert finished > 0.5 > unfinished, (finished, unfinished)
