"""What a G.711 telephone call carries, in one place.

Narrowband audio is sampled at 8000 Hz (ITU-T G.711); one RTP packet carries 20 ms
(the ``ptime`` both Twilio legs use, RFC 3551 section 4.5 and RFC 4566 section 6), so a
frame is 160 samples: PCM16 mono, 160 ``int16`` values, one byte each once encoded.
Every part of the call path (RTP, Media Streams, VAD, turn-taking, playout,
recordings) counts in these frames.
"""

from __future__ import annotations

#: Samples per second of a G.711 call (RTP clock rate of PCMU/PCMA, RFC 3551 section 4.5.14).
SAMPLE_RATE = 8000
#: Milliseconds of audio per RTP packet and per frame (``a=ptime:20``).
FRAME_MS = 20
#: Samples per 20 ms frame at 8000 Hz.
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
#: Seconds per frame.
PTIME = FRAME_MS / 1000
