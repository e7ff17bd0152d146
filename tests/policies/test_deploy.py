"""The deployed diffusion policy: export, runtime (same actions as PyTorch for the same noise,
action horizon, observation history, validation, latency warning) and JSON-lines serving."""

import io
import json
import queue
import shutil
import socket
import threading
import warnings

import numpy as np
import pytest
import torch

from policies.deploy import export as export_module
from policies.deploy.export import DEPLOY_FILE, export_policy
from policies.deploy.runtime import DeployedPolicy
from policies.deploy.serve import serve, serve_policy, serve_tcp
from policies.diffusion.configuration import CameraConfig, DiffusionPolicyConfig
from policies.diffusion.policy import DiffusionPolicy

CONFIG = DiffusionPolicyConfig(state_dim=4, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=3, unet="tiny",
                               inference_steps=10)
ATOL = 1e-4
"""Largest abs action difference (env units, actions within ±2) between an export and PyTorch."""
EXPORT_FILES = {DEPLOY_FILE, "encoder.pt", "film.pt", "denoiser.pt", "encoder.onnx", "film.onnx", "denoiser.onnx",
                "policy/config.json", "policy/model.safetensors"}


def make_policy(config: DiffusionPolicyConfig = CONFIG) -> DiffusionPolicy:
    """Untrained, with a normalizer that is not the identity (states around 3 ± 2, actions ±2)."""
    torch.manual_seed(0)
    policy = DiffusionPolicy(config).eval()
    if config.state_dim:
        policy.normalizer.fit("state", np.random.default_rng(0).normal(3, 2, (200, config.state_dim)), "gaussian")
    policy.normalizer.set_limits("action", -np.full(config.action_dim, 2.0), np.full(config.action_dim, 2.0))
    return policy


@pytest.fixture(scope="module")
def policy() -> DiffusionPolicy:
    return make_policy()


@pytest.fixture(scope="module")
def exported(policy, tmp_path_factory):
    return export_policy(policy, tmp_path_factory.mktemp("deploy") / "export")


def state_history(seed: int, steps: int = CONFIG.n_obs_steps) -> np.ndarray:
    return np.random.default_rng(seed).normal(3, 2, (steps, CONFIG.state_dim)).astype(np.float32)


def torch_chunk(policy: DiffusionPolicy, history: dict[str, np.ndarray], seed: int, steps: int | None) -> np.ndarray:
    obs = {k: torch.from_numpy(v)[None] for k, v in history.items()}
    return policy.sample_chunk(obs, torch.Generator().manual_seed(seed), steps=steps)[0].numpy()


def standard_noise(config: DiffusionPolicyConfig, seed: int) -> np.ndarray:
    """The draw `DiffusionPolicy.sample_chunk` starts from with a generator seeded `seed`."""
    return torch.randn(1, config.horizon, config.action_dim, generator=torch.Generator().manual_seed(seed))[0].numpy()


@pytest.mark.parametrize("steps", [None, 3])
@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript", "eager"])
def test_exported_policy_samples_the_pytorch_policys_actions_for_the_same_noise(policy, exported, backend, steps):
    deployed = DeployedPolicy.load(exported, backend, steps=steps, threads=1)
    for seed in range(3):
        history = {"state": state_history(seed)}
        chunk = deployed.sample_chunk(history, noise=standard_noise(CONFIG, seed))
        expected = torch_chunk(policy, history, seed, steps)
        assert chunk.shape == (CONFIG.horizon, CONFIG.action_dim)
        np.testing.assert_allclose(chunk, expected, atol=ATOL, rtol=0)
        assert np.abs(expected).max() > 0.1  # a real chunk, not a degenerate all-zero one


def test_camera_policy_exports_with_its_backbone_and_matches_pytorch(tmp_path):
    camera = CameraConfig(name="wrist", image_size=32, crop_size=28, backbone="resnet18")
    config = DiffusionPolicyConfig(state_dim=3, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=3,
                                   unet="tiny", inference_steps=4, cameras=(camera,))
    policy = make_policy(config)
    exported = export_policy(policy, tmp_path / "camera", frame_sizes={"wrist": (40, 36)})  # resized inside
    rng = np.random.default_rng(0)
    history = {"state": rng.normal(3, 2, (2, 3)).astype(np.float32),
               "wrist": rng.integers(0, 256, (2, 40, 36, 3), dtype=np.uint8)}
    expected = torch_chunk(policy, history, 7, None)
    for backend in ("onnxruntime", "torchscript"):
        chunk = DeployedPolicy.load(exported, backend, threads=1).sample_chunk(history, noise=standard_noise(config, 7))
        np.testing.assert_allclose(chunk, expected, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match=r"obs_history\['wrist'\]: expected shape \(2, 40, 36, 3\)"):
        DeployedPolicy.load(exported, "onnxruntime").sample_chunk({**history, "wrist": history["wrist"][:, :32, :32]})


def test_planar_convolutions_compute_the_unets_noise_without_any_1d_convolution(policy):
    planar = export_module.with_planar_convolutions(policy.unet)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(3, CONFIG.horizon, CONFIG.action_dim, generator=generator)
    timestep, cond = torch.tensor([0, 40, 99]), torch.randn(3, policy.obs_encoder.output_dim, generator=generator)
    with torch.no_grad():
        expected, found = policy.unet(sample, timestep, cond), planar.denoise(sample, policy.unet.film(timestep, cond))
    torch.testing.assert_close(found, expected, atol=1e-5, rtol=0)
    assert not any(isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) for m in planar.modules())
    assert any(isinstance(m, torch.nn.ConvTranspose1d) for m in policy.unet.modules())  # the original is untouched


def test_export_directory_is_complete_and_records_what_the_sampler_needs(policy, exported):
    files = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    assert files == EXPORT_FILES
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no staging directory left
    header = json.loads((exported / DEPLOY_FILE).read_text())
    assert header["config"]["n_action_steps"] == CONFIG.n_action_steps
    assert set(header["formats"]) == {"torchscript", "onnx"}
    assert all("skipped" not in written for written in header["formats"].values())
    assert set(header["files"]) == EXPORT_FILES - {DEPLOY_FILE}
    np.testing.assert_allclose(header["schedule"]["alphas_cumprod"], policy.ddim_scheduler.alphas_cumprod.numpy())
    assert header["schedule"]["clip_sample"] is True
    np.testing.assert_allclose(header["normalizer"]["state"]["offset"], policy.normalizer.state_offset.numpy())
    assert header["inputs"] == {"state": {"shape": [CONFIG.state_dim], "dtype": "float32"}}


@pytest.mark.parametrize(("backend", "damaged", "damage", "error"), [
    ("onnxruntime", "denoiser.onnx", "delete", FileNotFoundError),
    ("onnxruntime", "encoder.onnx", "corrupt", ValueError),
    ("torchscript", "encoder.pt", "corrupt", ValueError),
    ("torchscript", "film.pt", "delete", FileNotFoundError),
    ("eager", "policy/model.safetensors", "delete", FileNotFoundError),
    ("onnxruntime", DEPLOY_FILE, "corrupt", ValueError),
])
def test_a_missing_or_corrupt_file_gives_an_error_naming_it(exported, tmp_path, backend, damaged, damage, error):
    copy = shutil.copytree(exported, tmp_path / "export")
    path = copy / damaged
    if damage == "delete":
        path.unlink()
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(error, match=damaged.replace(".", r"\.")):
        DeployedPolicy.load(copy, backend)


def test_act_samples_a_new_chunk_exactly_every_n_action_steps_calls(exported):
    deployed = DeployedPolicy.load(exported, "onnxruntime", seed=0)
    chunks = []
    sample_chunk = deployed.sample_chunk
    deployed.sample_chunk = lambda history: chunks.append(sample_chunk(history)) or chunks[-1]
    ta, first = CONFIG.n_action_steps, CONFIG.n_obs_steps - 1
    actions = [deployed.act({"state": state_history(i, 1)[0]}) for i in range(2 * ta + 1)]
    assert len(chunks) == 3  # before actions 0, Ta and 2Ta
    for i, action in enumerate(actions):
        np.testing.assert_array_equal(action, chunks[i // ta][first + i % ta])
    deployed.reset()
    deployed.act({"state": state_history(0, 1)[0]})
    assert len(chunks) == 4  # a reset drops the rest of the chunk


def test_act_conditions_on_the_last_n_obs_steps_observations_padding_the_first(exported):
    ta = CONFIG.n_action_steps
    observations = [state_history(100 + i, 1)[0] for i in range(ta + 1)]

    def second_chunk_actions(changed_step: int | None) -> tuple[np.ndarray, list[np.ndarray]]:
        deployed = DeployedPolicy.load(exported, "onnxruntime", seed=0)
        histories = []
        sample_chunk = deployed.sample_chunk
        deployed.sample_chunk = lambda history: histories.append(history["state"]) or sample_chunk(history)
        steps = [o + 5.0 if i == changed_step else o for i, o in enumerate(observations)]
        actions = [deployed.act({"state": s}) for s in steps]
        return actions[ta], histories

    reference, histories = second_chunk_actions(None)
    np.testing.assert_array_equal(histories[0], np.stack([observations[0]] * 2))  # the first observation repeated
    np.testing.assert_array_equal(histories[1], np.stack(observations[ta - 1:ta + 1]))
    assert np.array_equal(second_chunk_actions(ta - 2)[0], reference)  # older than the window: no effect
    assert not np.allclose(second_chunk_actions(ta - 1)[0], reference, atol=1e-3)  # inside the window


@pytest.mark.parametrize(("observation", "message"), [
    ({"position": [0.0] * 4}, "observation: missing key 'state'"),
    ({"state": [0.0] * 3}, r"observation\['state'\]: expected shape \(4,\), found \(3,\)"),
    ({"state": [0.0, float("nan"), 0.0, 0.0]}, r"observation\['state'\]: expected finite values"),
    ({"state": ["a", "b", "c", "d"]}, r"observation\['state'\]: expected numbers"),
])
def test_bad_observations_raise_value_errors_naming_the_key(exported, observation, message):
    with pytest.raises(ValueError, match=message):
        DeployedPolicy.load(exported, "onnxruntime").act(observation)


def test_latency_warning_fires_once_when_the_budget_is_tiny(exported):
    deployed = DeployedPolicy.load(exported, "onnxruntime", latency_budget_s=1e-7)
    with pytest.warns(RuntimeWarning, match=r"took [\d.]+ ms, over the latency budget of 0\.0 ms"):
        deployed.sample_chunk({"state": state_history(0)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per policy
        deployed.sample_chunk({"state": state_history(1)})
    assert DeployedPolicy.load(exported, "onnxruntime", control_hz=10).latency_budget_s == pytest.approx(0.1)


def test_serve_answers_every_line_and_survives_malformed_ones(exported):
    deployed = DeployedPolicy.load(exported, "onnxruntime", seed=0)
    state = state_history(0, 1)[0].tolist()
    lines = [json.dumps({"state": state}), "not json {", json.dumps({"state": state[:3]}), json.dumps([1, 2]),
             json.dumps({"reset": True}), "", json.dumps({"state": state})]
    out = io.StringIO()
    serve(deployed, io.StringIO("\n".join(lines) + "\n"), out)
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(replies) == 6  # the blank line gets none
    assert len(replies[0]["action"]) == CONFIG.action_dim and replies[0]["latency_ms"] > 0
    assert "not a JSON line" in replies[1]["error"]
    assert "observation['state']: expected shape (4,)" in replies[2]["error"]
    assert "expected a JSON object" in replies[3]["error"]
    assert replies[4] == {"reset": True}
    assert len(replies[5]["action"]) == CONFIG.action_dim

def test_serve_tcp_serves_one_client_per_connection(exported):
    deployed = DeployedPolicy.load(exported, "onnxruntime", seed=0)
    addresses = queue.Queue()
    server = threading.Thread(target=serve_tcp, args=(deployed,), kwargs=dict(clients=1, on_listening=addresses.put))
    server.start()
    host, port = addresses.get(timeout=10)
    assert host == "127.0.0.1"
    with socket.create_connection((host, port), timeout=10) as client, client.makefile("rw") as stream:
        for line in (json.dumps({"state": state_history(0, 1)[0].tolist()}), "{oops"):
            stream.write(line + "\n")
            stream.flush()
        replies = [json.loads(stream.readline()) for _ in range(2)]
    server.join(timeout=10)
    assert not server.is_alive()
    assert len(replies[0]["action"]) == CONFIG.action_dim and "error" in replies[1]


def test_serve_policy_answers_stdin_on_stdout(exported, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"state": [1.0, 2.0, 3.0, 4.0]}) + "\n"))
    serve_policy(exported, backend="torchscript", steps=2)
    reply = json.loads(capsys.readouterr().out)
    assert len(reply["action"]) == CONFIG.action_dim


def test_a_format_that_fails_to_export_is_skipped_with_its_reason(policy, tmp_path, monkeypatch):
    def failing(*args):
        raise RuntimeError("unsupported operator Foo")

    monkeypatch.setitem(export_module.EXPORTERS, "onnx", failing)
    with pytest.warns(RuntimeWarning, match="format 'onnx' skipped"):
        exported = export_policy(policy, tmp_path / "export", formats=("onnx",))
    header = json.loads((exported / DEPLOY_FILE).read_text())
    assert "encoder.onnx: RuntimeError: unsupported operator Foo" in header["formats"]["onnx"]["skipped"]
    with pytest.raises(ValueError, match="'onnx' was skipped at export .*unsupported operator Foo"):
        DeployedPolicy.load(exported, "onnxruntime")
    with pytest.raises(ValueError, match="'torchscript' was not exported"):
        DeployedPolicy.load(exported, "torchscript")
    assert DeployedPolicy.load(exported, "eager").sample_chunk({"state": state_history(0)}).shape == (8, 2)


def test_a_crashed_export_leaves_the_previous_export_untouched(policy, tmp_path, monkeypatch):
    directory = export_policy(policy, tmp_path / "export", formats=())
    before = (directory / DEPLOY_FILE).read_text()
    monkeypatch.setattr(export_module, "sha256", lambda path: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        export_policy(policy, directory, formats=())
    monkeypatch.undo()
    assert (directory / DEPLOY_FILE).read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes: exists and is not a policy export"):
        export_policy(policy, tmp_path / "notes", formats=())
