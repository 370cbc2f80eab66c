"""IMUIO: MediaIO conformance for .npy and CSV; the documented layouts (6 or 7 columns, named columns, Ego4D's
CSV, milliseconds, uneven timestamps) and bad files as one error line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nextgpt_core.errors import MediaError
from nextgpt_core.testing.mixins import MediaIOTesterMixin
from nextgpt_imu.media import DEFAULT_RATE, IMU, IMUIO


class _Conformance(MediaIOTesterMixin):
    io_class = IMUIO

    def get_dummy_media(self) -> IMU:
        rng = np.random.default_rng(0)
        return IMU(rng.normal(0, 1, (300, 6)).astype(np.float32), 250.0)

    def assert_media_equal(self, a: IMU, b: IMU) -> None:
        assert a.sample_rate == b.sample_rate
        np.testing.assert_array_equal(a.samples, b.samples)


class TestIMUIONpy(_Conformance):
    suffix = ".npy"


class TestIMUIOCsv(_Conformance):
    suffix = ".csv"


def test_six_column_npy_is_400_hz_and_transposed_is_named(tmp_path: Path) -> None:
    samples = np.arange(60, dtype=np.float32).reshape(10, 6)
    np.save(tmp_path / "a.npy", samples)
    imu = IMUIO().read(tmp_path / "a.npy")
    assert imu.sample_rate == DEFAULT_RATE and np.array_equal(imu.samples, samples)
    np.save(tmp_path / "t.npy", samples.T.copy())
    with pytest.raises(MediaError, match="t.npy.*transposed"):
        IMUIO().read(tmp_path / "t.npy")


def test_ego4d_csv_reads_by_column_name(tmp_path: Path) -> None:
    """Ego4D's IMU CSV: gyro before accel, a millisecond canonical timestamp, extra columns."""
    lines = ["component_idx,component_timestamp_ms,canonical_timestamp_ms,gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z"]
    for i in range(5):
        lines.append(f"0,{1000 + 5 * i},{2000 + 5 * i},{i},{i + 0.5},{-i},{9.8},{0.1 * i},{-0.2}")
    (tmp_path / "ego4d.csv").write_text("\n".join(lines) + "\n")
    imu = IMUIO().read(tmp_path / "ego4d.csv")
    assert imu.sample_rate == 200.0  # 5 ms steps
    np.testing.assert_allclose(imu.samples[3], [9.8, 0.3, -0.2, 3.0, 3.5, -3.0], rtol=1e-6)


def test_unnamed_columns_and_uneven_timestamps(tmp_path: Path) -> None:
    (tmp_path / "six.csv").write_text("a,b,c,d,e,f\n1,2,3,4,5,6\n7,8,9,10,11,12\n")
    six = IMUIO().read(tmp_path / "six.csv")
    assert six.sample_rate == DEFAULT_RATE and six.samples.shape == (2, 6)
    rows = ["t,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z"]
    for t in (0.0, 0.01, 0.03, 0.04):  # one missing sample: resampled to an even 100 Hz grid
        rows.append(f"{t},{100 * t},0,9.8,0,0,0")
    (tmp_path / "gap.csv").write_text("\n".join(rows) + "\n")
    gap = IMUIO().read(tmp_path / "gap.csv")
    assert gap.sample_rate == 100.0 and gap.samples.shape == (5, 6)
    np.testing.assert_allclose(gap.samples[:, 0], [0, 1, 2, 3, 4], atol=1e-5)


@pytest.mark.parametrize(("text", "match"), [
    ("acc_x,acc_y,acc_z\n1,2,3\n", "names some IMU axes but not gyro_x"),
    ("a,b,c\n1,2,3\n", "has 3 columns"),
    ("t,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n0,1,2,3,4,5,6\n0,1,2,3,4,5,6\n", "timestamps must increase"),
    ("a,b,c,d,e,f\n1,2,x,4,5,6\n", "row 2 holds something that is not a number"),
    ("a,b,c,d,e,f\n1,2,3,4,5,6\n1,2,3\n", "row 3 has 3 columns"),
    ("a,b,c,d,e,f\n", "no samples"),
])
def test_bad_csv_is_one_line_naming_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(MediaError, match=match) as info:
        IMUIO().read(path)
    assert "bad.csv" in str(info.value) and "\n" not in str(info.value)


def test_bad_npy_and_values(tmp_path: Path) -> None:
    np.save(tmp_path / "nan.npy", np.full((4, 6), np.nan, np.float32))
    with pytest.raises(MediaError, match="nan.npy.*NaN"):
        IMUIO().read(tmp_path / "nan.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MediaError, match="obj.npy"):
        IMUIO().read(tmp_path / "obj.npy")
    with pytest.raises(MediaError, match="sample rate"):
        IMU(np.zeros((3, 6)), 0.0)


def test_to_bytes_is_canonical() -> None:
    io = IMUIO()
    imu = io.example()
    assert io.to_bytes(imu) == io.to_bytes(IMU(imu.samples.astype(np.float64), imu.sample_rate))
    assert io.to_bytes(imu) != io.to_bytes(IMU(imu.samples, 200.0))
    assert io.to_bytes(imu.samples) == io.to_bytes(imu)  # a bare (T, 6) array is 400 Hz
