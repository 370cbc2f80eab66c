"""The IMU plugin's part of the toy world: 5-second motion recordings at 40 Hz (200 samples of 6 channels).

Captions (18 in all): ``"someone walking while turning left, the sensor held flat"`` - pace (standing still,
walking, running) x turn (while turning left, while turning right, without turning) x hold (flat, upright).

A recording is an :class:`~nextgpt_imu.media.IMU` at :data:`RATE_HZ`: gravity (9.81 m/s^2) on the accelerometer's
z axis when the sensor is held flat, on its y axis when upright; steps bounce along gravity (walking about 2 Hz
and 1.5 m/s^2, running about 3 Hz and 5 m/s^2, with random phase, rate and strength); a turn is a steady rotation
about the gravity axis (+/-1 rad/s, left positive); a little sway and sensor noise on every channel.

Held out of every training phase: running while turning left (both holds): 2 captions (11%).

:meth:`IMUToyWorld.read_back` measures a recording without any trained network: the hold from the axis with the
largest mean acceleration, the pace from the strength and the spectral peak of the acceleration along that axis,
the turn from the mean rotation rate about it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from nextgpt_core.toy.contract import Attributes, EncoderRecipe, ToyModality

from .media import IMU
from .preprocess import resample

__all__ = ["IMUToyWorld", "RATE_HZ", "SAMPLES"]

#: the toy recordings' sample rate and length (5 s, as ImageBind's clips)
RATE_HZ = 40.0
SAMPLES = 200
GRAVITY = 9.81
PACES = {"standing still": (0.0, 0.0), "walking": (2.0, 1.5), "running": (3.0, 5.0)}  # (steps per second, m/s^2)
TURNS = {"while turning left": 1.0, "while turning right": -1.0, "without turning": 0.0}  # rad/s about gravity
HOLDS = ("flat", "upright")
_GRAVITY_AXIS = {"flat": 2, "upright": 1}  # accelerometer axis holding gravity (gyro axis = this + 3)


class IMUToyWorld(ToyModality):
    """IMU recordings of the toy world (see the module docstring)."""

    key: ClassVar[str] = "imu"
    noun: ClassVar[str] = "motion recording"
    can_generate: ClassVar[bool] = False
    axes: ClassVar[dict[str, tuple[str, ...]]] = {"pace": tuple(PACES), "turn": tuple(TURNS), "hold": HOLDS}
    describe_requests: ClassVar[tuple[str, ...]] = (
        "What does this motion recording show?", "Describe this IMU recording.", "What was the person doing?",
        "What movement is in these sensor readings?", "Tell me what this accelerometer data shows.",
        "How was the wearer moving?", "Can you describe this motion data?", "What activity is recorded here?",
        "Give me a caption for this IMU recording.", "Explain these motion sensor readings.",
        "What does the movement sensor say?", "Write a caption for this motion recording.",
    )
    describe_answers: ClassVar[tuple[str, ...]] = ("It is {caption}.", "The recording shows {caption}.",
                                                   "The sensor says {caption}.")

    # ------------------------------------------------------------------ what exists
    def combinations(self) -> list[dict[str, str]]:
        return [{"pace": p, "turn": t, "hold": h} for p in PACES for t in TURNS for h in HOLDS]

    def caption(self, attrs: Attributes) -> str:
        return f"someone {attrs['pace']} {attrs['turn']}, the sensor held {attrs['hold']}"

    def held_out(self, attrs: Attributes) -> bool:
        return (attrs["pace"], attrs["turn"]) == ("running", "while turning left")

    def editable(self, attrs: Attributes) -> bool:
        return False  # input-only: nothing to edit

    # ------------------------------------------------------------------ media
    def render(self, attrs: Attributes, rng: np.random.Generator) -> IMU:
        t = np.arange(SAMPLES, dtype=np.float64) / RATE_HZ
        up = _GRAVITY_AXIS[attrs["hold"]]
        samples = rng.normal(0.0, 0.05, size=(SAMPLES, 6))  # sensor noise
        samples[:, up] += GRAVITY
        rate, strength = PACES[attrs["pace"]]
        if strength:
            rate *= float(rng.uniform(0.92, 1.08))
            strength *= float(rng.uniform(0.8, 1.2))
            phase = float(rng.uniform(0, 2 * np.pi))
            samples[:, up] += strength * np.sin(2 * np.pi * rate * t + phase)
            side = 0  # the sideways sway of each step, at half the step rate
            samples[:, side] += 0.3 * strength * np.sin(np.pi * rate * t + phase)
        sway = 0.05 * np.sin(2 * np.pi * float(rng.uniform(0.2, 0.5)) * t + float(rng.uniform(0, 2 * np.pi)))
        samples[:, 3] += sway
        samples[:, 3 + up] += TURNS[attrs["turn"]] * float(rng.uniform(0.85, 1.15))
        return IMU(samples.astype(np.float32), RATE_HZ)

    def read_back(self, media: Any) -> dict[str, str]:
        imu = media if isinstance(media, IMU) else IMU(np.asarray(media), RATE_HZ)
        samples = resample(imu, RATE_HZ).astype(np.float64)
        acc, gyro = samples[:, :3], samples[:, 3:]
        means = np.abs(acc.mean(axis=0))
        up = int(np.argmax(means))
        if up == 0:
            return {}
        along = acc[:, up] - acc[:, up].mean()
        strength = float(np.sqrt(2.0) * along.std())
        if strength < 0.5:
            pace = "standing still"
        else:
            spectrum = np.abs(np.fft.rfft(along * np.hanning(along.size)))
            freqs = np.fft.rfftfreq(along.size, 1.0 / RATE_HZ)
            peak = float(freqs[int(np.argmax(spectrum[1:])) + 1])
            pace = "walking" if peak < 2.5 else "running"
        turning = float(gyro[:, up].mean())
        turn = "while turning left" if turning > 0.5 else ("while turning right" if turning < -0.5 else "without turning")
        return {"pace": pace, "turn": turn, "hold": "flat" if up == 2 else "upright"}

    # ------------------------------------------------------------------ frozen networks
    def encoder_recipe(self, scale: str) -> EncoderRecipe:
        return EncoderRecipe(encoder="imu/imagebind", branch="imu", encoder_options={"size": "toy", "sample_rate": RATE_HZ})
