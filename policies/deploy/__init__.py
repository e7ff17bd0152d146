"""Running a trained diffusion policy on a robot's control computer: `export` writes the
networks as TorchScript and ONNX beside the normalization statistics, noise schedule and
config (`deploy.json`); `runtime` loads an export, keeps the observation history and serves
actions at the control rate by DDIM in numpy around the exported networks; `serve` answers
observations with actions over JSON lines (stdin/stdout or a local TCP socket)."""
