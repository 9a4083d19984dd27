"""Backbones and baseline heads: shapes on odd sizes, formulas against loops, gradients."""
import pytest
import torch

from fglib.models.backbones import SmallResNet, TorchvisionResNet, build_backbone
from fglib.core.config import ModelConfig
from fglib.data.memory import augment
from fglib.models import MODELS, build_model
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


def _contract_model(method, num_classes, widths=(6, 10)):
    """A tiny instance of a registered method (balanced batches where the model needs them)."""
    from fglib.models import MODEL_CLASSES

    cfg = ModelConfig(method=method, widths=widths, blocks=(1,) * len(widths), bilinear_dim=3)
    needs = MODEL_CLASSES[method].needs
    return build_model(method, SmallResNet(widths, (1,) * len(widths)), num_classes, cfg).double(), needs


def _contract_batch(needs, num_classes, size=(2 * 3 + 1, 2 * 5 + 3)):
    per_class = max(2, needs.images_per_class)
    y = torch.arange(num_classes).repeat_interleave(per_class)[: max(needs.classes, num_classes) * per_class]
    return torch.randn(len(y), 3, *size, dtype=torch.float64), y


@pytest.mark.parametrize("method", sorted(MODELS))
@pytest.mark.parametrize("num_classes", [3, 5])
def test_model_contract(method, num_classes):
    """Every registered model: (logits, named losses); shapes on odd sizes; nothing at evaluation;
    one image at a time; a class map whose mean plus the bias is the logit, where it has one."""
    torch.manual_seed(0)
    model, needs = _contract_model(method, num_classes)
    x, y = _contract_batch(needs, num_classes)
    logits, losses = model.train()(x, y)
    assert logits.shape == (len(x), num_classes)
    assert losses and any(k == "ce" or k.startswith("ce_") for k in losses)   # a softmax term
    assert all(v.dim() == 0 and v.isfinite() for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    model.eval()
    with torch.no_grad():
        logits, losses = model(x)
        assert losses == {} and logits.shape == (len(x), num_classes)
        one, _ = model(x[:1])                                       # batch-size-1 inference
        torch.testing.assert_close(one, logits[:1])
        fmap = model.features(x)
        assert fmap.shape[:2] == (len(x), model.backbone.out_channels if method != "bilinear" else 3)
        if getattr(model, "head_from_map", True):
            torch.testing.assert_close(model.forward_head(fmap), logits)
        else:                                                       # logits need the image
            with pytest.raises(TypeError, match="need the image"):
                model.forward_head(fmap)
        if model.has_cam:
            cam = model.cam(x, y)
            assert cam.shape == (len(x), *fmap.shape[2:])
            torch.testing.assert_close(cam.mean((1, 2)) + model.head.fc.bias[y],
                                       logits[torch.arange(len(x)), y])
        else:
            with pytest.raises(TypeError, match="no class activation map"):
                model.cam(x, y)


def test_a_model_that_needs_balanced_batches_is_refused_random_ones():
    from fglib.core.config import RunConfig
    from fglib.engine.train import ConfigError, check_config

    cfg = RunConfig().override(**{"model.method": "apinet", "train.sampler": "random"})
    with pytest.raises(ConfigError, match="pairs every image.*classes_per_batch >= 2"):
        check_config(cfg)
    check_config(cfg.override(**{"train.sampler": "balanced"}))
    with pytest.raises(ConfigError, match="images_per_class >= 2"):
        check_config(cfg.override(**{"train.sampler": "balanced", "train.images_per_class": 1}))


@pytest.mark.parametrize("method", sorted(MODELS))
def test_model_options_are_the_constructor_arguments(method):
    import inspect

    from fglib.models import MODEL_CLASSES, option_names

    params = inspect.signature(MODEL_CLASSES[method].__init__).parameters
    defaults = {name: params[name].default for name in option_names(method)}
    assert all(v is not inspect.Parameter.empty for v in defaults.values())
    # every option the model takes is accepted by name, e.g. {"xi": None, "mu": 1.5, ...}
    backbone = SmallResNet((4, 6), (1, 1))
    build_model(method, backbone, 3, ModelConfig(method=method, options=defaults))
    with pytest.raises(ValueError, match="not settings of"):
        build_model(method, SmallResNet((4, 8), (1, 1)), 3, ModelConfig(method=method, options={"nope": 1}))


def test_pretrained_weights_that_cannot_be_fetched_name_the_ways_out(monkeypatch, tmp_path):
    import urllib.error

    import torchvision

    from fglib.models.backbones import PretrainedWeightsError

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict",
                        lambda self, *a, **k: offline())
    with pytest.raises(PretrainedWeightsError, match="could not be fetched.*weights_path.*torch hub cache.*"
                                                     "pretrained=false"):
        TorchvisionResNet("resnet18", pretrained=True)


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


@pytest.mark.parametrize("method", ["baseline", "bilinear", "mcloss", "apinet", "cin", "mamc",
                                    "rra"])
def test_every_method_builds_the_class_its_fingerprint_covers(method):
    """MODEL_CLASSES names the module whose code is in a method's runs' fingerprint (fglib.experiments.provenance)."""
    from fglib.models import MODEL_CLASSES, MODELS, model_module

    assert set(MODEL_CLASSES) == set(MODELS)
    cfg = ModelConfig(method=method, widths=(8, 48), blocks=(1, 1))
    model = build_model(method, SmallResNet((8, 48), (1, 1)), 24, cfg)
    assert isinstance(model, MODEL_CLASSES[method])
    assert model_module(method) == type(model).__module__
