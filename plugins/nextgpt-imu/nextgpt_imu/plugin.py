"""Hook implementations of the IMU plugin (input only): names and numbers only (no torch import)."""

from nextgpt_registry import ComponentChoice, ComponentSpec, ModalityPreset, ModalitySpec, ToyWorldSpec, hookimpl

CODE_LICENSE = "Apache-2.0"


@hookimpl
def nextgpt_register_modalities(register):
    register(ModalitySpec(
        key="imu",
        description="IMU recordings (input only): accelerometer + gyroscope as .npy or CSV; name them: imu=PATH",
        license=CODE_LICENSE,
        wrapper_tokens=("<Imu>", "</Imu>"),
        extensions=(".npy", ".csv"),
        detect_by_extension=False,  # .npy and .csv hold anything: the user says imu=PATH
        mime_types=("text/csv",),
        media_io="nextgpt_imu.media:IMUIO",
        presets={"tiny": ModalityPreset(
            encoder=ComponentChoice(id="imu/imagebind", options={"size": "tiny"}),
            input_projector=ComponentChoice(id="linear"),
        )},
    ))


@hookimpl
def nextgpt_register_components(register):
    register(ComponentSpec(
        id="imu/imagebind", role="encoder", modality="imu",
        target="nextgpt_imu.encoders:ImageBindIMUEncoder",
        license="Apache-2.0 (code); CC-BY-NC-SA-4.0 (ImageBind weights)",
        description="ImageBind-huge IMU branch (6 channels x 2000 samples: 5 s at 400 Hz), 1024-d",
    ))


@hookimpl
def nextgpt_register_toy_world(register):
    register(ToyWorldSpec(modality="imu", target="nextgpt_imu.toy:IMUToyWorld",
                          description="5 s motion recordings: still, walking or running; turning or not; held flat or upright"))
