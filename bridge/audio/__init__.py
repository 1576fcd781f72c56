"""Audio as every layer counts it: the wire's constants (8000 Hz, 20 ms, 160-sample
frames, :mod:`.wire`) and sample-rate conversion by FFmpeg (:mod:`.resample`).

A leaf of the layer rule (docs/architecture.md): the media, the conversation, the
engines and the records all import it, and it imports nothing of ``bridge``.
"""
