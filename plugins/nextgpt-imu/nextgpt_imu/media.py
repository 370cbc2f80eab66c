"""IMU files for nextgpt: ``.npy`` and CSV in and out, as an :class:`IMU` (six channels at a sample rate).

Layout (the one ImageBind's IMU branch takes, channel order as the paper names the signal: "accelerometer and
gyroscope measurements across the X, Y, and Z axes"):

- channels: ``acc_x, acc_y, acc_z`` (m/s^2, gravity included) then ``gyro_x, gyro_y, gyro_z`` (rad/s);
- ``.npy``: a float array ``(T, 6)`` sampled at :data:`DEFAULT_RATE` (400 Hz, ImageBind's 2000 samples per 5 s),
  or ``(T, 7)`` whose first column is the time in seconds;
- CSV: a header line, then one row per sample. Columns are found by name (case-insensitive): a time column
  (``t``, ``time``, ``timestamp``, ``time_s``: seconds; ``time_ms``, ``timestamp_ms`` or any name ending in
  ``timestamp_ms``, e.g. Ego4D's ``canonical_timestamp_ms``: milliseconds) and the six axes (``acc_x`` /
  ``accl_x`` / ``accel_x`` / ``ax`` ..., ``gyro_x`` / ``gyr_x`` / ``gx`` ...), in any order, other columns ignored
  (Ego4D's IMU CSVs read as they are). A header that names none of these takes 6 columns as the six axes at
  400 Hz, or 7 as the time (s) and the six axes.

Timestamps must increase. Evenly spaced ones (within 1%) give the sample rate (1 / the median step, to 1e-6 Hz);
uneven ones are resampled linearly onto an even grid at the median step.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nextgpt_core.errors import MediaError
from nextgpt_core.interfaces import MediaIO

__all__ = ["CHANNELS", "DEFAULT_RATE", "IMU", "IMUIO", "MAX_BYTES", "MAX_SAMPLES"]

#: the channel order of every IMU array
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
#: the sample rate of a ``.npy`` (T, 6) file: ImageBind's 2000 samples per 5-second clip
DEFAULT_RATE = 400.0
#: most samples one recording may hold (about 7 hours at 400 Hz)
MAX_SAMPLES = 10_000_000
#: largest file accepted
MAX_BYTES = 512 * 1024 * 1024

_TIME_S = ("t", "time", "timestamp", "time_s", "timestamp_s", "seconds")
_AXIS_NAMES = {
    "acc_x": ("acc_x", "accl_x", "accel_x", "accelerometer_x", "ax"),
    "acc_y": ("acc_y", "accl_y", "accel_y", "accelerometer_y", "ay"),
    "acc_z": ("acc_z", "accl_z", "accel_z", "accelerometer_z", "az"),
    "gyro_x": ("gyro_x", "gyr_x", "gyroscope_x", "gx"),
    "gyro_y": ("gyro_y", "gyr_y", "gyroscope_y", "gy"),
    "gyro_z": ("gyro_z", "gyr_z", "gyroscope_z", "gz"),
}


@dataclass(eq=False)
class IMU:
    """One IMU recording.

    Attributes:
        samples: float32 ``(T, 6)``: ``acc_x, acc_y, acc_z`` (m/s^2) then ``gyro_x, gyro_y, gyro_z`` (rad/s).
        sample_rate: samples per second (> 0).
    """

    samples: np.ndarray
    sample_rate: float = DEFAULT_RATE

    def __post_init__(self) -> None:
        samples = np.asarray(self.samples)
        if samples.ndim != 2 or samples.shape[1] != 6 or samples.shape[0] == 0:
            raise MediaError(f"an IMU recording is (T, 6) samples ({', '.join(CHANNELS)}), got shape {samples.shape}")
        if not (np.issubdtype(samples.dtype, np.floating) or np.issubdtype(samples.dtype, np.integer)):
            raise MediaError(f"IMU samples must be numbers, got {samples.dtype}")
        self.samples = np.ascontiguousarray(samples, dtype=np.float32)
        if not np.isfinite(self.samples).all():
            raise MediaError("an IMU recording holds NaN or infinity")
        rate = float(self.sample_rate)
        if not math.isfinite(rate) or rate <= 0:
            raise MediaError(f"an IMU sample rate must be a positive number of Hz, got {self.sample_rate!r}")
        self.sample_rate = rate

    @property
    def seconds(self) -> float:
        """The recording's length: ``T / sample_rate``."""
        return self.samples.shape[0] / self.sample_rate


def _as_imu(media: Any) -> IMU:
    if isinstance(media, IMU):
        return media
    return IMU(np.asarray(media))  # a bare (T, 6) array is taken at DEFAULT_RATE


def _from_timed(times: np.ndarray, values: np.ndarray) -> IMU:
    """Samples with timestamps (seconds) -> an evenly sampled :class:`IMU`."""
    if len(times) < 2:
        return IMU(values, DEFAULT_RATE)
    if not np.isfinite(times).all():
        raise MediaError("a timestamp is not a number")
    steps = np.diff(times)
    if (steps <= 0).any():
        raise MediaError(f"timestamps must increase (sample {int(np.argmax(steps <= 0)) + 2} does not)")
    step = float(np.median(steps))
    rate = round(1.0 / step, 6)
    if np.abs(steps - step).max() <= 0.01 * step:
        return IMU(values, rate)
    grid = times[0] + np.arange(int(math.floor((times[-1] - times[0]) / step + 1e-6)) + 1) * step
    resampled = np.stack([np.interp(grid, times, values[:, c]) for c in range(6)], axis=1)
    return IMU(resampled, rate)


def _columns(header: list[str], name: str) -> tuple[int | None, float, list[int]]:
    """``(time column or None, seconds per time unit, the six axis columns)`` from a CSV header."""
    names = [h.strip().lower() for h in header]
    axes = []
    for channel in CHANNELS:
        found = [i for i, n in enumerate(names) if n in _AXIS_NAMES[channel]]
        axes.append(found[0] if found else None)
    time_col, unit = None, 1.0
    for i, n in enumerate(names):
        if n in _TIME_S:
            time_col, unit = i, 1.0
            break
        if n in ("time_ms", "timestamp_ms") or n.endswith("timestamp_ms"):
            if time_col is None or n == "canonical_timestamp_ms":
                time_col, unit = i, 1e-3
    if all(a is not None for a in axes):
        return time_col, unit, axes  # type: ignore[return-value]
    if any(a is not None for a in axes):
        missing = [c for c, a in zip(CHANNELS, axes) if a is None]
        raise MediaError(f"{name!r}: the header names some IMU axes but not {', '.join(missing)}")
    if len(names) == 6:
        return None, 1.0, list(range(6))
    if len(names) == 7:
        return 0, 1.0, list(range(1, 7))
    raise MediaError(f"{name!r}: the header names no IMU axes (acc_x ... gyro_z) and has {len(names)} columns, not 6 or 7")


class IMUIO(MediaIO):
    """Reads and writes IMU recordings (the layout in the module docstring) as :class:`IMU`.

    Write: ``.npy`` stores ``(T, 7)`` float64 (time in seconds, then the six axes); any other suffix writes a CSV
    with the header ``t,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z``. Both read back to the same recording.
    """

    def read(self, path: Path) -> IMU:
        """Decode ``path`` -> :class:`IMU`; every problem is one ``MediaError`` naming the file."""
        path = Path(path)
        name = str(path)
        if not path.is_file():
            raise MediaError(f"IMU file not found: {name!r}" if not path.is_dir() else f"{name!r} is a folder, not an IMU file")
        size = path.stat().st_size
        if size == 0:
            raise MediaError(f"{name!r} is empty (0 bytes)")
        if size > MAX_BYTES:
            raise MediaError(f"{name!r} is {size} bytes; IMU files are limited to {MAX_BYTES}")
        try:
            if path.suffix.lower() == ".npy":
                return self._read_npy(path, name)
            return self._read_csv(path, name)
        except MediaError:
            raise
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise MediaError(f"{name!r} is not a readable IMU recording ({msg})") from exc

    def _read_npy(self, path: Path, name: str) -> IMU:
        array = np.load(path, allow_pickle=False)
        if array.ndim != 2 or array.shape[1] not in (6, 7) or array.shape[0] == 0:
            hint = "; it looks transposed" if array.ndim == 2 and array.shape[0] in (6, 7) else ""
            raise MediaError(f"{name!r} holds an array of shape {array.shape}; an IMU .npy is (T, 6) or (T, 7) "
                             f"with a time column first{hint}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise MediaError(f"{name!r} holds {array.dtype}, not numbers")
        if array.shape[0] > MAX_SAMPLES:
            raise MediaError(f"{name!r} holds {array.shape[0]} samples; IMU recordings are limited to {MAX_SAMPLES}")
        try:
            if array.shape[1] == 6:
                return IMU(array, DEFAULT_RATE)
            return _from_timed(array[:, 0].astype(np.float64), array[:, 1:].astype(np.float64))
        except MediaError as exc:
            raise MediaError(f"{name!r}: {exc}") from exc

    def _read_csv(self, path: Path, name: str) -> IMU:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise MediaError(f"{name!r} is not a UTF-8 text file") from None
        rows = list(csv.reader(io.StringIO(text)))
        rows = [r for r in rows if r and any(cell.strip() for cell in r)]
        if len(rows) < 2:
            raise MediaError(f"{name!r} has no samples: expected a header line and at least one row")
        if not text.endswith("\n"):
            raise MediaError(f"{name!r} does not end with a line break (truncated?)")
        if len(rows) - 1 > MAX_SAMPLES:
            raise MediaError(f"{name!r} holds {len(rows) - 1} samples; IMU recordings are limited to {MAX_SAMPLES}")
        time_col, unit, axes = _columns(rows[0], name)
        width = len(rows[0])
        wanted = axes + ([time_col] if time_col is not None else [])
        table = np.empty((len(rows) - 1, len(wanted)), dtype=np.float64)
        for r, row in enumerate(rows[1:], start=2):
            if len(row) != width:
                raise MediaError(f"{name!r}: row {r} has {len(row)} columns, the header {width} (truncated?)")
            try:
                table[r - 2] = [float(row[i]) for i in wanted]
            except ValueError:
                raise MediaError(f"{name!r}: row {r} holds something that is not a number") from None
        if not np.isfinite(table).all():
            raise MediaError(f"{name!r}: a value is NaN or infinite")
        try:
            if time_col is None:
                return IMU(table, DEFAULT_RATE)
            return _from_timed(table[:, 6] * unit, table[:, :6])
        except MediaError as exc:
            raise MediaError(f"{name!r}: {exc}") from exc

    def write(self, media: Any, path: Path) -> Path:
        """Write ``media`` (an :class:`IMU`, or a ``(T, 6)`` array at 400 Hz) as ``.npy`` or CSV, with times."""
        imu = _as_imu(media)
        path = Path(path)
        times = np.arange(imu.samples.shape[0], dtype=np.float64) / imu.sample_rate
        if path.suffix.lower() == ".npy":
            with open(path, "wb") as fh:
                np.save(fh, np.concatenate([times[:, None], imu.samples.astype(np.float64)], axis=1))
            return path
        lines = ["t," + ",".join(CHANNELS)]
        lines += [repr(float(t)) + "," + ",".join(repr(float(v)) for v in row) for t, row in zip(times, imu.samples)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def to_bytes(self, media: Any) -> bytes:
        """Canonical form: ``b"IMU <rate to 1e-6 Hz> <T>\\n"`` + float32 little-endian samples (C order)."""
        imu = _as_imu(media)
        header = f"IMU {imu.sample_rate:.6f} {imu.samples.shape[0]}\n".encode()
        return header + imu.samples.astype("<f4", copy=False).tobytes()

    def example(self) -> IMU:
        """6 s of walking at 400 Hz: gravity on z with a 2 Hz step bounce, a slight sway, a slow turn to the left."""
        t = np.arange(2400, dtype=np.float64) / DEFAULT_RATE
        samples = np.zeros((t.size, 6))
        samples[:, 0] = 0.4 * np.sin(2 * np.pi * 1.0 * t)
        samples[:, 2] = 9.81 + 1.5 * np.sin(2 * np.pi * 2.0 * t)
        samples[:, 3] = 0.1 * np.sin(2 * np.pi * 1.0 * t)
        samples[:, 5] = 0.3
        return IMU(samples.astype(np.float32), DEFAULT_RATE)
