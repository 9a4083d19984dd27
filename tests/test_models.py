"""Backbones and baseline heads: shapes on odd sizes, formulas against loops, gradients."""
import pytest
import torch

from fglib.backbones import SmallResNet, TorchvisionResNet, build_backbone
from fglib.config import ModelConfig
from fglib.data.memory import augment
from fglib.models import build_model
from fglib.models.baseline import BilinearClassifier, GAPClassifier, bilinear_pool


@pytest.mark.parametrize("widths,size", [((8, 16, 32), (37, 45)), ((4, 8, 16, 32), (33, 64)), ((6,), (9, 11))])
def test_small_resnet_exposes_channels_and_stride(widths, size):
    net = SmallResNet(widths, (1,) * len(widths))
    fmap = net(torch.randn(2, 3, *size))
    assert fmap.shape[1] == net.out_channels == widths[-1]
    assert fmap.shape[2] == -(-size[0] // net.stride) and fmap.shape[3] == -(-size[1] // net.stride)


def test_torchvision_resnet_loads_a_saved_state_dict(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    net = TorchvisionResNet("resnet18", weights_path=tmp_path / "r18.pth")
    assert torch.equal(net.body[0].weight, ref.conv1.weight) and net.out_channels == 512
    assert net(torch.randn(1, 3, 65, 70)).shape == (1, 512, 3, 3)
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="lacks"):
        TorchvisionResNet("resnet18", weights_path=tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="unknown"):
        build_backbone("vgg")


@pytest.mark.parametrize("num_classes", [3, 7])
def test_heads_return_logits_and_named_losses(num_classes):
    for method in ["baseline", "bilinear"]:
        model = build_model(method, SmallResNet((4, 8), (1, 1)), num_classes, ModelConfig(bilinear_dim=5))
        x, y = torch.randn(3, 3, 19, 23), torch.tensor([0, 1, 2])
        logits, losses = model(x, y)
        assert logits.shape == (3, num_classes) and set(losses) == {"ce"}
        assert model(x)[1] == {}


def test_bilinear_pool_matches_the_definition():
    fmap = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    ours = bilinear_pool(fmap)
    for b in range(2):
        B = torch.zeros(3, 3, dtype=torch.float64)
        for i in range(4):
            for j in range(5):
                v = fmap[b, :, i, j]
                B += torch.outer(v, v)
        B = (B / 20).flatten()
        z = torch.sign(B) * torch.sqrt(B.abs() + 1e-10)
        assert torch.allclose(ours[b], z / z.norm(), atol=1e-9)


def test_bilinear_pool_gradient():
    fmap = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(bilinear_pool, (fmap,))


def test_cam_sums_to_the_logit():
    model = GAPClassifier(SmallResNet((4, 8), (1, 1)), 5).eval()
    x = torch.randn(2, 3, 16, 16)
    cls = torch.tensor([1, 3])
    cam = model.cam(x, cls)
    logits, _ = model(x)
    assert torch.allclose(cam.mean((1, 2)) + model.fc.bias[cls], logits[torch.arange(2), cls], atol=1e-5)


def test_augment_crops_and_flips_like_the_definition():
    x = torch.randint(0, 255, (5, 3, 6, 7), dtype=torch.uint8)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out = augment(x, padding=2, flip=True, generator=g1)
    dy, dx = torch.randint(0, 5, (5,), generator=g2), torch.randint(0, 5, (5,), generator=g2)
    flips = torch.rand(5, generator=g2) < 0.5
    padded = torch.zeros(5, 3, 10, 11, dtype=torch.uint8)
    padded[:, :, 2:8, 2:9] = x
    for b in range(5):
        crop = padded[b, :, dy[b]:dy[b] + 6, dx[b]:dx[b] + 7]
        assert torch.equal(out[b], crop.flip(2) if flips[b] else crop)


def test_bilinear_head_rejects_nothing_but_has_no_fixed_sizes():
    model = BilinearClassifier(SmallResNet((4, 8, 8), (1, 1, 1)), 11, dim=6)
    assert model(torch.randn(2, 3, 31, 17))[0].shape == (2, 11)


@pytest.mark.parametrize("method", ["baseline", "bilinear", "mcloss", "apinet"])
def test_every_method_builds_the_class_its_fingerprint_covers(method):
    """MODEL_CLASSES names the module whose code is in a method's runs' fingerprint (fglib.provenance)."""
    from fglib.models import MODEL_CLASSES, MODELS, model_module

    assert set(MODEL_CLASSES) == set(MODELS)
    cfg = ModelConfig(method=method, widths=(8, 48), blocks=(1, 1))
    model = build_model(method, SmallResNet((8, 48), (1, 1)), 24, cfg)
    assert isinstance(model, MODEL_CLASSES[method])
    assert model_module(method) == type(model).__module__
