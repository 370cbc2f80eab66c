"""The IMU modality plugin of nextgpt (input only): ImageBind's IMU branch."""
