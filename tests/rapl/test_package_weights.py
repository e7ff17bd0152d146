import shutil

import numpy as np
import pytest
import timm
import torch
from skimage import data as photos

from embodied_pref.rapl import package_weights
from embodied_pref.rapl.encoder import EncoderConfig, FrameEncoder, preprocess_frames, resize_frames

# ImageNet classes: 281-285 are domestic cats, 967 espresso, 968 cup.
CATS, COFFEE = range(281, 286), (967, 968)


@pytest.fixture(scope="module")
def imagenet_state():
    return package_weights.efficientnet_lite0_state_dict()


def _photos() -> torch.Tensor:
    """Chelsea the cat and a cup of coffee, (2, 224, 224, 3) uint8."""
    return torch.stack([resize_frames(torch.from_numpy(np.array(p)), 224) for p in (photos.chelsea(), photos.coffee())])


def _class_probabilities(model: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(preprocess_frames(frames, 224, imagenet_normalize=True)).softmax(-1)


def test_package_weights_classify_imagenet_photographs(imagenet_state):
    model = timm.create_model("efficientnet_lite0").eval()
    model.load_state_dict(imagenet_state)
    probs = _class_probabilities(model, _photos())
    assert int(probs[0].argmax()) in CATS and float(probs[0, list(CATS)].sum()) > 0.5
    assert int(probs[1].argmax()) in COFFEE and float(probs[1, list(COFFEE)].sum()) > 0.5

    torch.manual_seed(0)
    untrained = _class_probabilities(timm.create_model("efficientnet_lite0").eval(), _photos())
    assert float(untrained[0, list(CATS)].sum()) < 0.05


def test_encoder_starts_from_the_package_weights(imagenet_state):
    config = EncoderConfig(backbone="efficientnet_lite0", pretrained=True, pretrained_source="package",
                           image_size=224, imagenet_normalize=True, embedding_dim=8)
    encoder = FrameEncoder(config).eval()
    classifier = torch.nn.Linear(encoder.feature_dim, 1000)
    classifier.load_state_dict({"weight": imagenet_state["classifier.weight"], "bias": imagenet_state["classifier.bias"]})
    with torch.no_grad():
        logits = classifier(encoder.features(_photos()))
    assert int(logits[0].argmax()) in CATS and int(logits[1].argmax()) in COFFEE

    grid = FrameEncoder(EncoderConfig(backbone="efficientnet_lite0", pretrained=True, pretrained_source="package",
                                      pool_grid=2, image_size=64)).eval()
    torch.testing.assert_close(grid.backbone.state_dict()["conv_stem.weight"], imagenet_state["conv_stem.weight"])


def test_a_different_file_is_refused(tmp_path):
    tampered = tmp_path / "lite0.pth"
    shutil.copy(package_weights.weights_path(), tampered)
    with tampered.open("r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(ValueError, match="lite0.pth: SHA-256"):
        package_weights.efficientnet_lite0_state_dict(tampered)


def test_conversion_names_the_tensor_that_does_not_fit():
    target = {"conv_stem.weight": torch.Size([32, 3, 3, 3]), "bn1.weight": torch.Size([32])}
    good = {"_conv_stem.weight": torch.zeros(32, 3, 3, 3), "_bn0.weight": torch.ones(32)}
    assert list(package_weights.convert(good, target, "f.pth")) == ["conv_stem.weight", "bn1.weight"]
    with pytest.raises(ValueError, match=r"f.pth: tensor '_bn0.weight' \(16,\) does not fit timm's 'bn1.weight'"):
        package_weights.convert({**good, "_bn0.weight": torch.ones(16)}, target, "f.pth")
    with pytest.raises(ValueError, match="f.pth: expected 2 tensors"):
        package_weights.convert({"_conv_stem.weight": good["_conv_stem.weight"]}, target, "f.pth")


def test_package_source_needs_its_backbone_and_pretrained():
    with pytest.raises(ValueError, match="pretrained_source.*resnet18"):
        EncoderConfig(pretrained=True, pretrained_source="package")
    with pytest.raises(ValueError, match="pretrained_source.*pretrained=True"):
        EncoderConfig(backbone="efficientnet_lite0", pretrained_source="package")
