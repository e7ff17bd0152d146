import numpy as np
import pytest
import torch

from embodied_pref.rapl.encoder import EncoderConfig, FrameEncoder, preprocess_frames


def _frames(n: int = 2) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(0).integers(0, 256, (n, 3, 40, 40, 3), dtype=np.uint8))


def test_preprocess_shapes_and_range():
    x = preprocess_frames(_frames(), 32)
    assert x.shape == (2, 3, 3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    normalized = preprocess_frames(_frames(), 32, imagenet_normalize=True)
    assert normalized.min() < 0.0
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frames(_frames().float(), 32)


def test_weights_file_round_trip_and_freezing(tmp_path):
    torch.manual_seed(0)
    config = EncoderConfig(backbone="resnet10t", embedding_dim=8, image_size=32)
    source = FrameEncoder(config).eval()
    whole, backbone = tmp_path / "encoder.pt", tmp_path / "backbone.pt"
    torch.save(source.state_dict(), whole)
    torch.save(source.backbone.state_dict(), backbone)
    frames = _frames()
    expected = source(frames)
    assert expected.shape == (2, 3, 8)

    torch.manual_seed(1)
    loaded = FrameEncoder(EncoderConfig(backbone="resnet10t", embedding_dim=8, image_size=32, encoder_weights=whole)).eval()
    torch.testing.assert_close(loaded(frames), expected)

    torch.manual_seed(1)
    frozen = FrameEncoder(EncoderConfig(backbone="resnet10t", embedding_dim=8, image_size=32,
                                        encoder_weights=backbone, freeze_backbone=True))
    torch.testing.assert_close(frozen.eval().features(frames), source.features(frames))
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert frozen.train().backbone.training is False


def test_bad_weights_are_named(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(ValueError, match="other.pt"):
        FrameEncoder(EncoderConfig(backbone="resnet10t", image_size=32, encoder_weights=other))
    with pytest.raises(ValueError, match="encoder_weights"):
        EncoderConfig(encoder_weights=tmp_path / "missing.pt")


def test_pool_grid_keeps_cells_and_loads_global_pool_weights(tmp_path):
    torch.manual_seed(0)
    source = FrameEncoder(EncoderConfig(backbone="resnet10t", embedding_dim=8, image_size=64)).eval()
    path = tmp_path / "backbone.pt"
    torch.save(source.backbone.state_dict(), path)
    grid = FrameEncoder(EncoderConfig(backbone="resnet10t", embedding_dim=8, image_size=64, pool_grid=2,
                                      encoder_weights=path)).eval()
    assert grid.feature_dim == 4 * source.feature_dim and grid.projection.in_features == grid.feature_dim
    frames = _frames()
    cells = grid.features(frames)
    assert cells.shape == (2, 3, grid.feature_dim) and grid(frames).shape == (2, 3, 8)
    # The mean over the grid cells is global average pooling of the same backbone.
    pooled = cells.reshape(2, 3, source.feature_dim, 4).mean(-1)
    torch.testing.assert_close(pooled, source.features(frames), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="pool_grid"):
        EncoderConfig(pool_grid=0)


@pytest.mark.parametrize("backbone, tail", [("resnet10t", 1), ("efficientnet_lite0", 3)])
def test_trainable_tail_on_cached_trunk_maps_matches_the_whole_encoder(backbone, tail):
    torch.manual_seed(0)
    config = EncoderConfig(backbone=backbone, image_size=64, pool_grid=2, freeze_backbone=True, trainable_tail=tail)
    encoder = FrameEncoder(config).train()
    frames = _frames()
    maps = encoder.trunk_maps(frames)
    assert maps.shape[:2] == (2, 3) and maps.dim() == 5
    torch.testing.assert_close(encoder.pool_trunk_maps(maps), encoder.features(frames))
    assert not encoder.backbone.training  # BatchNorm statistics stay frozen
    names = {n for n, p in encoder.backbone.named_parameters() if p.requires_grad}
    frozen = {n for n, p in encoder.backbone.named_parameters() if not p.requires_grad}
    assert names and frozen and all(n.startswith(("layer4", "blocks.6", "conv_head", "bn2")) for n in names)
    assert set(encoder.state_dict()) == set(FrameEncoder(EncoderConfig(backbone=backbone, image_size=64)).state_dict())


def test_trainable_tail_is_validated():
    with pytest.raises(ValueError, match="trainable_tail"):
        EncoderConfig(trainable_tail=1)
    with pytest.raises(ValueError, match="trainable_tail.*modules on its feature path"):
        FrameEncoder(EncoderConfig(backbone="resnet10t", image_size=32, freeze_backbone=True, trainable_tail=99))
    with pytest.raises(ValueError, match="not a chain"):
        FrameEncoder(EncoderConfig(backbone="vit_tiny_patch16_224", image_size=64, freeze_backbone=True, trainable_tail=1))


def test_fit_standardization_standardizes_features_on_every_path_and_is_saved(tmp_path):
    torch.manual_seed(0)
    encoder = FrameEncoder(EncoderConfig(backbone="resnet10t", embedding_dim=8, image_size=32)).train()
    frames = torch.as_tensor(np.random.default_rng(1).integers(0, 256, (4, 6, 40, 40, 3), dtype=np.uint8))
    bn_stats = {k: v.clone() for k, v in encoder.state_dict().items() if "running" in k}
    raw = encoder.eval().features(frames)
    encoder.train()

    encoder.fit_standardization(frames)
    assert encoder.training  # its mode is restored, and BatchNorm statistics were not updated by the fit
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in bn_stats.items())
    standardized = encoder.eval().features(frames).reshape(-1, encoder.feature_dim)
    spread = raw.reshape(-1, encoder.feature_dim).std(0) > 1e-3  # the other dims keep their floor scale
    torch.testing.assert_close(standardized.mean(0), torch.zeros(encoder.feature_dim), atol=1e-4, rtol=0)
    torch.testing.assert_close(standardized.std(0)[spread], torch.ones(int(spread.sum())), atol=1e-4, rtol=0)
    tail = FrameEncoder(EncoderConfig(backbone="resnet10t", embedding_dim=8, image_size=32, freeze_backbone=True, trainable_tail=1))
    tail.fit_standardization(frames)
    torch.testing.assert_close(tail.features(frames).mean((0, 1)), torch.zeros(tail.feature_dim), atol=1e-4, rtol=0)
    torch.testing.assert_close(tail.pool_trunk_maps(tail.trunk_maps(frames)), tail.features(frames))
    # Refitting starts from the raw features, not from the standardized ones.
    encoder.fit_standardization(frames)
    torch.testing.assert_close(encoder.features(frames).reshape(-1, encoder.feature_dim), standardized)

    path = tmp_path / "encoder.pt"
    torch.save(encoder.state_dict(), path)
    loaded = FrameEncoder(EncoderConfig(backbone="resnet10t", embedding_dim=8, image_size=32, encoder_weights=path)).eval()
    torch.testing.assert_close(loaded(frames), encoder.eval()(frames))
    assert torch.equal(loaded.feature_std, encoder.feature_std)
    # A whole-encoder file saved before standardization existed loads as unstandardized.
    old = tmp_path / "old.pt"
    torch.save({k: v for k, v in encoder.state_dict().items() if not k.startswith("feature_")}, old)
    unfitted = FrameEncoder(EncoderConfig(backbone="resnet10t", embedding_dim=8, image_size=32, encoder_weights=old)).eval()
    torch.testing.assert_close(unfitted.features(frames), raw)
