"""The hold tone of the shipped music-on-hold class ``botbridge`` (musiconhold.conf).

A caller whose escalation failed waits in the Stasis application while a new bot dialog is
set up; it hears the class named by ``[bridge] hold_music_class`` meanwhile, never silence.
Asterisk's own hold music is a separate distribution package (not always installed), so the
rendered instance gets a short generated chime in ``<instance>/lib/moh`` unless that
directory already holds files of the operator's own. Standard library only (``wave``).
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

__all__ = ["HOLD_TONE_FILE", "write_hold_tone"]

HOLD_TONE_FILE = "botbridge-hold-tone.wav"
SAMPLE_RATE = 8000  # format_wav: 8 kHz, 16-bit signed linear, mono
# two soft notes and a rest, repeated by Asterisk (A4, C#5; -12 dBFS)
NOTES_HZ = (440.0, 554.37)
NOTE_SECONDS = 0.5
REST_SECONDS = 1.0
AMPLITUDE = 0.25
FADE_SECONDS = 0.05


def _note(frequency: float) -> list[int]:
    count = int(NOTE_SECONDS * SAMPLE_RATE)
    fade = int(FADE_SECONDS * SAMPLE_RATE)
    samples = []
    for i in range(count):
        envelope = min(1.0, i / fade, (count - i) / fade)
        value = AMPLITUDE * envelope * math.sin(2 * math.pi * frequency * i / SAMPLE_RATE)
        samples.append(int(value * 32767))
    return samples


def hold_tone_samples() -> list[int]:
    samples: list[int] = []
    for frequency in NOTES_HZ:
        samples.extend(_note(frequency))
    samples.extend([0] * int(REST_SECONDS * SAMPLE_RATE))
    return samples


def write_hold_tone(directory: Path) -> None:
    """Write the hold tone into ``directory`` unless it already holds any file."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(p.is_file() for p in directory.iterdir()):
        return
    samples = hold_tone_samples()
    with wave.open(str(directory / HOLD_TONE_FILE), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(struct.pack(f"<{len(samples)}h", *samples))
