import numpy as np
import pytest
import torch

from policies.diffusion.configuration import CameraConfig, DiffusionPolicyConfig
from policies.diffusion.modeling import ConditionalUnet1D, random_crops
from policies.diffusion.policy import DiffusionPolicy

TINY_CAMERA = CameraConfig(name="frames", image_size=32, crop_size=28, backbone="test_resnet")


@pytest.mark.parametrize("horizon", [8, 16, 32])
def test_unet_keeps_the_chunk_shape_for_every_horizon(horizon):
    torch.manual_seed(0)
    unet = ConditionalUnet1D(action_dim=3, global_cond_dim=10, down_dims=(32, 64, 128))
    out = unet(torch.randn(4, horizon, 3), torch.tensor([0, 5, 50, 99]), torch.randn(4, 10))
    assert out.shape == (4, horizon, 3)
    assert torch.isfinite(out).all()


def test_unet_rejects_a_chunk_it_cannot_halve_twice():
    unet = ConditionalUnet1D(action_dim=2, global_cond_dim=4, down_dims=(32, 64, 128))
    with pytest.raises(ValueError, match="not divisible by 4"):
        unet(torch.randn(1, 10, 2), torch.tensor([1]), torch.randn(1, 4))


def test_unet_output_depends_on_the_conditioning():
    torch.manual_seed(0)
    unet = ConditionalUnet1D(action_dim=2, global_cond_dim=4, down_dims=(32, 64, 128))
    x, t = torch.randn(1, 16, 2), torch.tensor([10])
    assert not torch.allclose(unet(x, t, torch.zeros(1, 4)), unet(x, t, torch.ones(1, 4)))


@pytest.mark.parametrize("horizon", [8, 16, 32])
@pytest.mark.parametrize("conditioning", ["state", "image", "state+image"])
def test_policy_samples_chunks_of_the_configured_shape(horizon, conditioning):
    cameras = (TINY_CAMERA,) if "image" in conditioning else ()
    config = DiffusionPolicyConfig(state_dim=5 if "state" in conditioning else 0, action_dim=2, horizon=horizon,
                                   n_action_steps=4, unet="tiny", cameras=cameras, inference_steps=3)
    torch.manual_seed(0)
    policy = DiffusionPolicy(config).eval()
    obs = {}
    if config.state_dim:
        obs["state"] = torch.randn(3, 2, 5)
    if cameras:
        obs["frames"] = torch.randint(0, 256, (3, 2, 40, 40, 3), dtype=torch.uint8)
    chunk = policy.sample_chunk(obs, torch.Generator().manual_seed(0))
    assert chunk.shape == (3, horizon, 2)
    assert policy.predict_action(obs, torch.Generator().manual_seed(0)).shape == (3, 4, 2)
    actions = torch.rand(3, horizon, 2) * 2 - 1
    loss = policy.bc_loss(obs, actions, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.item() > 0
    if cameras:  # the image encoder is trained through the denoising loss
        grads = [p.grad for p in policy.obs_encoder.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)


def test_random_crops_differ_per_image_and_stay_inside_it():
    images = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8).repeat(4, 1, 1, 1)
    crops = random_crops(images, 5, torch.Generator().manual_seed(0))
    assert crops.shape == (8, 1, 5, 5)
    top_left = crops[:, 0, 0, 0]
    assert len(set(top_left.tolist())) > 1
    for crop, image in zip(crops, images):
        value = crop[0, 0, 0].item()
        row, col = np.argwhere(image[0].numpy() == value)[0]
        assert torch.equal(image[0, row:row + 5, col:col + 5], crop[0])


def test_config_names_the_bad_field():
    with pytest.raises(ValueError, match="horizon"):
        DiffusionPolicyConfig(state_dim=3, action_dim=2, horizon=10)
    with pytest.raises(ValueError, match="unet"):
        DiffusionPolicyConfig(state_dim=3, action_dim=2, unet="huge")
    with pytest.raises(ValueError, match="n_action_steps"):
        DiffusionPolicyConfig(state_dim=3, action_dim=2, horizon=8, n_action_steps=8)
    with pytest.raises(ValueError, match="noise_scale"):
        DiffusionPolicyConfig(state_dim=3, action_dim=2, noise_scale=-0.5)
