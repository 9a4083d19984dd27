"""What the formula tests do not see, found by mutation testing (`make mutation`, README
"Mutation testing"): each loss term is its weight times its own function, dropout and the
other settings reach the modules that use them, the defaults are the book's settings, the
backbone is He et al.'s ResNet (against torchvision's), patches and proposals on images
that are not square, and the read-outs the chapters use (RRA's attention and per-step
logits) on the boxes they are given."""
import inspect

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fglib.core.config import ModelConfig
from fglib.models import MODEL_CLASSES, RunFiles, build_model
from fglib.models import apinet as apinet_module
from fglib.models import cin as cin_module
from fglib.models import mamc as mamc_module
from fglib.models.apinet import APIModule, random_pair_indices
from fglib.models.attention import chance_on_part, nearest_part, peak_on_part
from fglib.models.backbones import (BasicBlock, SmallResNet, TorchvisionResNet, build_backbone,
                                    load_small_resnet)
from fglib.models.baseline import bilinear_pool
from fglib.models.blocks import NonLocal, SqueezeExcite
from fglib.models.cin import (SCI, ChannelInteractionNet, cci_weights, check_batch,
                              contrastive_loss, pair_indices, port_pair_indices)
from fglib.models.heads import LinearHead, gap
from fglib.models.mamc import OSME, npair_terms
from fglib.models.mcloss import MCLoss, channel_groups
from fglib.models.patches import augment_params, cut, square_boxes
from fglib.models.rra import RRANet
from tests.test_wiring import batch, model_of

# The defaults are the settings of every stored run that does not name them (model.options
# is empty for a chapter's main row): a changed default silently changes the book. Sources:
# ../shared/papers.md and each method's module docstring.
DEFAULTS = {
    "baseline": {"dropout": 0.0},
    "bilinear": {"dim": 64, "dropout": 0.0},
    "mcloss": {"xi": None, "mu": 1.5, "lam": 20 / (1.5 * 3), "mask": "batch", "use_dis": True,
               "use_div": True, "dropout": 0.0},      # official CUB script: 1.5, 20 / (1.5 xi)
    "apinet": {"lam": 1.0, "margin": 0.05, "pairs": "nearest", "use_rank": True, "hidden": None,
               "mlp_dropout": 0.5, "dropout": 0.5},   # paper Sec. 4.1
    "cin": {"block": "sci", "attention": "sci", "temperature": 1.0, "contrastive": "cci",
            "alpha": 2.0, "beta": 0.5, "r": None, "dropout": 0.0},  # paper Sec. 4.1
    "mamc": {"parts": 2, "part_dim": None, "pooling": "vec", "grid": 5, "lam": 0.5,
             "terms": "all", "self_positive": False, "normalize": False, "divisor": "N",
             "dropout": 0.0},
    "rra": {"steps": 4, "lam": 1.0, "source": "centre", "sequence": "repeat", "patch": 0.5,
            "patch_pixels": None, "proposals": 4, "evaluation": "top", "lstm": True,
            "hidden": None, "local_input": "patch", "streams": "both", "cam_run": None,
            "cam_weights": None, "dropout": 0.0},
}
PART_DEFAULTS = [
    (OSME, {"parts": 2, "dim": None, "reduction": 16, "pooling": "vec", "grid": 5}),
    (SmallResNet, {"widths": (16, 32, 64, 128), "blocks": (1, 1, 1, 1), "in_channels": 3,
                   "output_stride": None}),
    (BasicBlock, {"dilation": 1}),
    (TorchvisionResNet, {"name": "resnet50", "pretrained": False, "weights_path": None}),
    (SqueezeExcite, {"reduction": 16}),
    (APIModule, {"hidden": None, "dropout": 0.5}),
    (LinearHead, {"dropout": 0.0}),
    (MCLoss, {"mask": "batch"}),
    (SCI, {"attention": "sci", "temperature": 1.0}),
]


def defaults(cls):
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("method", sorted(MODEL_CLASSES))
def test_model_defaults_are_the_books_settings(method):
    assert defaults(MODEL_CLASSES[method]) == pytest.approx(DEFAULTS[method]), method


@pytest.mark.parametrize("cls,expected", PART_DEFAULTS, ids=lambda c: getattr(c, "__name__", ""))
def test_part_defaults_are_the_books_settings(cls, expected):
    assert defaults(cls) == expected


@pytest.mark.parametrize("method", sorted(MODEL_CLASSES))
def test_the_configured_dropout_reaches_every_classifier(method):
    """model.dropout is the classifier's dropout in every model (API-Net's f_m keeps its
    own, mlp_dropout)."""
    cfg = ModelConfig(method=method, widths=(6, 10), blocks=(1, 1), bilinear_dim=3, dropout=0.3,
                      options={"mlp_dropout": 0.2} if method == "apinet" else {})
    model = build_model(method, SmallResNet((6, 10), (1, 1)), 4, cfg)
    heads = [m for m in model.modules() if isinstance(m, LinearHead)]
    drops = {name: m.p for name, m in model.named_modules() if isinstance(m, nn.Dropout)}
    assert drops, method
    for name, p in drops.items():
        assert p == (0.2 if name.startswith("api.") else 0.3), (method, name, p)
    assert all(h.dropout.p == 0.3 for h in heads)


def spy(monkeypatch, owner, name, calls):
    """Replace owner.name by a wrapper that records what it returns."""
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out)
        return out
    monkeypatch.setattr(owner, name, wrapper)


@pytest.mark.parametrize("weight", [0.5, 3.0])
def test_each_loss_term_is_its_weight_times_its_function(monkeypatch, weight):
    """The logged term equals (configured weight) x (the term function's own value), read
    through a spy on that function, for every weighted term of every method."""
    calls: dict[str, list] = {"cont": [], "mamc": [], "rank": [], "dis": [], "div": []}
    spy(monkeypatch, cin_module, "contrastive_loss", calls["cont"])
    spy(monkeypatch, mamc_module, "mamc_loss", calls["mamc"])
    spy(monkeypatch, apinet_module, "rank_loss", calls["rank"])
    spy(monkeypatch, MCLoss, "discriminality", calls["dis"])
    spy(monkeypatch, MCLoss, "diversity", calls["div"])

    def terms(method, options):
        x, y = batch(method)
        model = model_of(method, options).train()
        return model(x, y)[1]

    t = terms("cin", {"alpha": weight})
    assert t["cont"].item() == pytest.approx(weight * calls["cont"][-1].item(), rel=1e-12)
    t = terms("apinet", {"lam": weight})
    assert t["rank"].item() == pytest.approx(weight * calls["rank"][-1].item(), rel=1e-12)
    t = terms("mamc", {"lam": weight})
    for name in ("sasc", "sadc", "dasc"):
        assert t[name].item() == pytest.approx(weight * calls["mamc"][-1][name].item(), rel=1e-12)
    t = terms("mcloss", {"mu": weight, "lam": 2.0})
    assert t["dis"].item() == pytest.approx(weight * calls["dis"][-1].item(), rel=1e-12)
    assert t["div"].item() == pytest.approx(-weight * 2.0 * calls["div"][-1].item(), rel=1e-12)


@pytest.mark.parametrize("weight", [0.5, 3.0])
def test_rra_loss_and_prediction_weigh_the_local_stream_by_lambda(weight):
    """L = CE(z_g, y) + lambda CE(z_l, y) and z = z_g + lambda z_l, z_l recomputed from the
    model's own local stream (evaluation patches, so both calls see the same ones)."""
    model = model_of("rra", {"lam": weight}).eval()
    x, y = batch("rra")
    with torch.no_grad():
        logits, losses = model(x, y)
        fmap = model.features(x)
        z_l, _ = model.local_stream(x, fmap)
        z_g = model.head(gap(fmap))
    torch.testing.assert_close(logits, z_g + weight * z_l)
    assert losses["ce_local"].item() == pytest.approx(weight * F.cross_entropy(z_l, y).item())
    assert losses["ce_global"].item() == pytest.approx(F.cross_entropy(z_g, y).item())


# --- the backbone: He et al.'s basic block, checked against torchvision's ResNet-18 ---

def _torchvision_keys(state):
    """torchvision's layerK.j.* / downsample.* names -> SmallResNet's stages.(K-1).j.* /
    shortcut.*"""
    out = {}
    for k, v in state.items():
        if not k.startswith("layer"):
            continue
        stage, rest = k[len("layer"):].split(".", 1)
        out[f"stages.{int(stage) - 1}.{rest.replace('downsample', 'shortcut')}"] = v
    return out


@pytest.mark.parametrize("train", [False, True])
def test_small_resnet_stages_are_torchvisions_resnet18_stages(train):
    """With ResNet-18's widths and depths, SmallResNet's four stages take torchvision's
    layer1..layer4 weights name for name and shape for shape (no extra bias, the same
    shortcuts) and compute the same maps; the stem is a 3x3 convolution, BN and ReLU."""
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(num_classes=10)
    ours = SmallResNet((64, 128, 256, 512), (2, 2, 2, 2))
    for m in ref.modules():                        # non-trivial statistics and affine terms
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    stages = _torchvision_keys(ref.state_dict())
    own = {k: v for k, v in ours.state_dict().items() if k.startswith("stages.")}
    assert sorted(own) == sorted(stages)
    ours.load_state_dict({**ours.state_dict(), **stages})
    ref.train(train)
    ours.train(train)
    h = torch.randn(2, 64, 12, 10)
    with torch.no_grad():
        expected = ref.layer4(ref.layer3(ref.layer2(ref.layer1(h))))
        torch.testing.assert_close(ours.stages(h), expected, rtol=1e-4, atol=1e-5)
        x = torch.randn(2, 3, 12, 10)
        stem = ours.stem[0]
        assert stem.kernel_size == (3, 3) and stem.bias is None
        z = F.conv2d(x, stem.weight, padding=1)
        z = F.batch_norm(z, ours.stem[1].running_mean, ours.stem[1].running_var,
                         ours.stem[1].weight, ours.stem[1].bias, training=train)
        torch.testing.assert_close(ours.stem(x), F.relu(z))


def _block_ref(block, x, stride, dilation):
    """y = relu(bn(conv3x3(relu(bn(conv3x3_s(x))))) + shortcut(x)), evaluation mode, from the
    block's parameters with the expected stride and dilation."""
    def bn(z, m):
        return F.batch_norm(z, m.running_mean, m.running_var, m.weight, m.bias, training=False)
    h = F.relu(bn(F.conv2d(x, block.conv1.weight, None, stride, dilation, dilation), block.bn1))
    h = bn(F.conv2d(h, block.conv2.weight, None, 1, dilation, dilation), block.bn2)
    s = x if len(block.shortcut) == 0 else bn(
        F.conv2d(x, block.shortcut[0].weight, None, stride), block.shortcut[1])
    return F.relu(h + s)


@pytest.mark.parametrize("output_stride,strides,dilations", [
    (None, [1, 2, 2, 2], [1, 1, 1, 1]),
    (4, [1, 2, 2, 1], [1, 1, 1, 2]),
    (2, [1, 2, 1, 1], [1, 1, 2, 4]),
])
def test_a_smaller_output_stride_dilates_the_last_stages_as_deeplab(output_stride, strides,
                                                                   dilations):
    torch.manual_seed(1)
    net = SmallResNet((4, 6, 8, 10), (2, 1, 1, 2), output_stride=output_stride).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        h = net.stem(x)
        for stage, s, d in zip(net.stages, strides, dilations):
            for j, block in enumerate(stage):
                h = _block_ref(block, h, s if j == 0 else 1, d)
        torch.testing.assert_close(net(x), h, rtol=1e-5, atol=1e-6)
    assert net.stride == (output_stride or 8)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            assert m.bias is None


def test_small_resnet_convolutions_start_with_he_fan_out_initialisation():
    """Kaiming normal, mode fan_out: std sqrt(2 / (k^2 c_out)); the stem (3 -> 64 channels)
    tells fan_out (std 0.059) from fan_in (0.27)."""
    torch.manual_seed(0)
    net = SmallResNet((64, 64), (1, 1))
    w = net.stem[0].weight
    assert w.std().item() == pytest.approx((2 / (9 * 64)) ** 0.5, rel=0.1)


@pytest.mark.parametrize("name,channels", [("resnet18", 512), ("resnet34", 512),
                                           ("resnet50", 2048), ("resnet101", 2048)])
def test_torchvision_resnets_by_name(name, channels):
    net = TorchvisionResNet(name)
    assert (net.out_channels, net.stride) == (channels, 32)
    assert sum(p.numel() for p in net.parameters()) == sum(
        p.numel() for n, p in getattr(torchvision.models, name)().named_parameters()
        if not n.startswith("fc."))


def test_a_torchvision_resnet_from_a_saved_state_dict_is_its_body_up_to_layer4(tmp_path):
    """The weights file's network, without pooling and classifier: conv1, bn1, ReLU, max-pool,
    layer1..layer4 (torchvision's own forward up to layer4 as the reference)."""
    torch.manual_seed(0)
    ref = torchvision.models.resnet18().eval()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    torch.save(ref.state_dict(), tmp_path / "r18.pt")
    net = TorchvisionResNet("resnet18", weights_path=tmp_path / "r18.pt").eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        h = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        expected = ref.layer4(ref.layer3(ref.layer2(ref.layer1(h))))
        torch.testing.assert_close(net(x), expected)


@pytest.mark.parametrize("prefix", ["", "backbone."])
def test_load_small_resnet_reads_a_backbone_or_a_whole_models_weights(tmp_path, prefix):
    """A SmallResNet state_dict, or a model's (keys backbone.*, the head's dropped), stored in
    float64 too: loaded as float32."""
    torch.manual_seed(0)
    src = SmallResNet((4, 6), (1, 1)).double()
    state = {prefix + k: v for k, v in src.state_dict().items()}
    if prefix:
        state["head.fc.weight"] = torch.zeros(3, 6)
    torch.save(state, tmp_path / "w.pt")
    net = load_small_resnet(SmallResNet((4, 6), (1, 1)), tmp_path / "w.pt")
    for k, v in net.state_dict().items():
        if v.is_floating_point():
            assert v.dtype == torch.float32
        torch.testing.assert_close(v, src.state_dict()[k].to(v.dtype))
    with pytest.raises(ValueError, match="does not fit this small_resnet"):
        load_small_resnet(SmallResNet((4, 8), (1, 1)), tmp_path / "w.pt")


def test_build_backbone_passes_every_setting(tmp_path):
    net = build_backbone("small_resnet", (4, 6, 8), (1, 2, 1), output_stride=2)
    assert (net.out_channels, net.stride, len(net.stages[1])) == (8, 2, 2)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    again = build_backbone("small_resnet", (4, 6, 8), (1, 2, 1), pretrained=True,
                           weights_path=str(tmp_path / "w.pt"), output_stride=2)
    for k, v in again.state_dict().items():
        torch.testing.assert_close(v, net.state_dict()[k])
    with pytest.raises(ValueError, match="starts from a weights file"):
        build_backbone("small_resnet", pretrained=True)
    assert isinstance(build_backbone("resnet18"), TorchvisionResNet)
    with pytest.raises(ValueError, match="only supported by small_resnet"):
        build_backbone("resnet18", output_stride=16)
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        build_backbone("vgg16")


# --- patches and proposals ---

def test_cut_in_float64_and_on_images_that_are_not_square():
    """Integer boxes copy their pixels, in the image's dtype, also where W != H."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 10, 14, generator=g, dtype=torch.float64)   # H = 10, W = 14
    boxes = torch.tensor([[[9.0, 2.0, 14.0, 7.0]], [[0.0, 5.0, 5.0, 10.0]]],
                         dtype=torch.float64)
    p = cut(x, boxes, 5)
    assert p.dtype == torch.float64 and p.shape == (2, 1, 3, 5, 5)
    torch.testing.assert_close(p[0, 0], x[0, :, 2:7, 9:14], rtol=0, atol=0)
    torch.testing.assert_close(p[1, 0], x[1, :, 5:10, 0:5], rtol=0, atol=0)
    off = cut(x, boxes + 0.25, 5)                  # off the grid: interpolated, same dtype
    assert off.dtype == torch.float64


def test_cut_with_no_boxes_gives_no_patches():
    x = torch.rand(2, 3, 8, 8)
    assert cut(x, torch.zeros(2, 0, 4), 4).shape == (2, 0, 3, 4, 4)


def test_square_boxes_accept_a_side_equal_to_the_short_side():
    boxes = square_boxes(torch.tensor([[[7.0, 5.0]]]), 10, (14, 10))
    assert boxes.tolist() == [[[2.0, 0.0, 12.0, 10.0]]]


def test_augment_shifts_cover_minus_to_plus_padding_with_padding_one():
    g = torch.Generator().manual_seed(0)
    out = augment_params(400, 1, False, g)
    shifts = {int(v) for v in torch.cat([out[0], out[1]])}
    assert shifts == {0, 1, 2}
    dy, dx, flipped = augment_params(5, 0, False, g)
    assert dy.dtype == dx.dtype == torch.long and not flipped.any()


def test_rra_centre_patch_on_an_image_that_is_not_square():
    """source="centre": one box per image, centred at (W/2, H/2), side patch * min(W, H)."""
    model = model_of("rra").eval()
    x = torch.zeros(2, 3, 16, 24, dtype=torch.float64)                # H = 16, W = 24
    boxes = model.candidates(x, model.features(x))
    assert boxes.shape == (2, 1, 4)
    assert boxes[0, 0].tolist() == [8.0, 4.0, 16.0, 12.0]


def test_rra_peaks_come_from_the_frozen_proposal_network_when_there_is_one():
    """With cam_run, the proposals are the peaks of the frozen network's map, not of the
    model's own: a frozen network whose map peaks in one corner moves the first box there."""
    model = model_of("rra", {"source": "peaks", "proposals": 2}).eval()
    x = torch.randn(1, 3, 24, 24, dtype=torch.float64)

    class Corner(nn.Module):
        def forward(self, images):
            m = torch.zeros(len(images), 2, 6, 6, dtype=images.dtype)
            m[:, :, 5, 5] = 1.0                    # bottom-right cell
            return m
    model._frozen.append(Corner())
    box = model.candidates(x, model.features(x))[0, 0]
    assert box.tolist() == [12.0, 12.0, 24.0, 24.0]


def test_rra_read_outs_use_the_boxes_they_are_given(monkeypatch):
    """attention_over_time and step_logits on given boxes equal what the model computes when
    its own proposals are those boxes (the RRA chapter reads both out per proposal)."""
    model = model_of("rra", {"source": "peaks", "proposals": 3}).eval()
    x, _ = batch("rra")
    g = torch.Generator().manual_seed(3)
    side = 12.0
    corner = torch.randint(0, 12, (len(x), 1, 2), generator=g).double()
    boxes = torch.cat([corner, corner + side], -1)
    with torch.no_grad():
        a_given = model.attention_over_time(x, boxes)
        s_given = model.step_logits(x, boxes)
        monkeypatch.setattr(model, "candidates", lambda images, fmap: boxes)
        a_own = model.attention_over_time(x)
        s_own = model.step_logits(x)
        own_a = model.local_stream(x, model.features(x))[1]
    torch.testing.assert_close(a_given, a_own)
    torch.testing.assert_close(a_own, own_a)
    torch.testing.assert_close(s_given, s_own)
    assert a_given.shape == (len(x), model.steps)
    torch.testing.assert_close(a_given.sum(1), torch.ones(len(x), dtype=a_given.dtype))
    assert s_given.shape == (len(x), model.steps, 4)


def test_random_partners_are_drawn_per_image():
    """API-Net's random pairing draws each image's partners independently: the four images
    of one class do not all get the same other-class partner in most draws."""
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    torch.manual_seed(0)
    differ = 0
    for _ in range(20):
        intra, inter = random_pair_indices(y)
        assert (y[intra] == y).all() and (intra != torch.arange(8)).all()
        assert (y[inter] != y).all()
        differ += len(set(inter[:4].tolist())) > 1
    assert differ >= 15


def test_rra_files_reach_the_model(tmp_path):
    """build_model hands RunFiles.proposals to RRANet as the frozen network's weights."""
    base = model_of("baseline")
    path = tmp_path / "cam.pt"
    torch.save({k: v.float() for k, v in base.state_dict().items()}, path)
    cfg = ModelConfig(method="rra", widths=(6, 10), blocks=(1, 1), dropout=0.1,
                      options={"source": "peaks", "cam_run": "x"})
    model = build_model("rra", SmallResNet((6, 10), (1, 1)), 4, cfg, RunFiles(proposals=path))
    assert model.cam_net is not None
    for k, v in model.cam_net.state_dict().items():
        torch.testing.assert_close(v, base.state_dict()["backbone." + k].to(v.dtype))


# --- CIN ---

@pytest.mark.parametrize("labels,a,b", [
    # 3 classes x 4: slot 0 inside the class, slot 1 with the next class (the last with the first)
    ([0] * 4 + [1] * 4 + [2] * 4, [0, 2, 4, 6, 8, 10], [1, 7, 5, 11, 9, 3]),
    # 6 images per class: slots 0 and 2 positive, slot 1 negative (two in three positive)
    ([0] * 6 + [1] * 6, [0, 2, 4, 6, 8, 10], [1, 9, 5, 7, 3, 11]),
    # 8 and 7 images: the next class has no image 7 for the first class's slot 3
    ([0] * 8 + [1] * 7, [0, 2, 4, 8, 10, 12], [1, 11, 5, 9, 3, 13]),
])
def test_cin_pairs_follow_the_slot_rule_by_hand(labels, a, b):
    y = torch.tensor(labels)
    pa, pb, same = pair_indices(y)
    assert pa.tolist() == a and pb.tolist() == b
    assert same.tolist() == [labels[i] == labels[j] for i, j in zip(a, b)]


def test_cin_accepts_two_classes_and_the_port_pairs_i_with_i_plus_half():
    check_batch(torch.tensor([0] * 4 + [1] * 4))
    a, b, same = port_pair_indices(torch.tensor([0, 1, 0, 1, 1, 1, 0]))   # B = 7, half 3
    assert a.tolist() == [0, 1, 2] and b.tolist() == [3, 4, 5]
    assert same.tolist() == [False, True, False]


def test_cin_contrastive_loss_of_a_close_negative_pair_by_hand():
    """A negative pair at distance 0.3 < beta = 0.5 costs (0.5 - 0.3)^2; a positive one d^2."""
    h_a = torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    h_b = torch.tensor([[0.3, 0.0], [0.0, 0.3]], dtype=torch.float64)
    loss = contrastive_loss(h_a, h_b, torch.tensor([False, True]), 0.5)
    assert loss.item() == pytest.approx(((0.5 - 0.3) ** 2 + 0.3 ** 2) / 2)


def test_cin_projection_is_at_most_512_wide_and_the_pair_outputs_hold_w_ab():
    net = ChannelInteractionNet(SmallResNet((600,), (1,)), 3)
    assert net.h.out_features == 512
    model = model_of("cin").train()
    x, y = batch("cin")
    with torch.no_grad():
        out = model.pair_forward(model.features(x), y)
    w = out["w"]
    torch.testing.assert_close(out["w_ab"], cci_weights(w[out["a"]], w[out["b"]], out["eta"]))
    torch.testing.assert_close(out["w_ba"], cci_weights(w[out["b"]], w[out["a"]], out["gamma"]))


def test_cin_contrastive_features_are_unit_vectors(monkeypatch):
    seen = []
    real = cin_module.contrastive_loss
    monkeypatch.setattr(cin_module, "contrastive_loss",
                        lambda h_a, h_b, same, beta: seen.append((h_a, h_b)) or real(
                            h_a, h_b, same, beta))
    model = model_of("cin").train()
    model(*batch("cin"))
    for h in seen[0]:
        torch.testing.assert_close(h.norm(dim=1), torch.ones(len(h), dtype=h.dtype))


# --- OSME / MAMC ---

def test_osme_settings_reach_its_modules():
    osme = OSME(32, parts=3, dim=5, reduction=4, pooling="gap", grid=3)
    assert [w.out_features for w in osme.w3] == [5, 5, 5]
    assert all(w.in_features == 32 for w in osme.w3)                 # gap: c inputs
    assert all(se.w1.out_features == 8 for se in osme.excite)          # c / reduction
    assert OSME(10).w3[0].out_features == 5 and OSME(3).w3[0].out_features == 1
    assert OSME(8, grid=3).w3[0].in_features == 8 * 3 * 3


def test_osme_classifier_passes_its_settings_down(monkeypatch):
    model = model_of("mamc", {"part_dim": 5, "pooling": "gap", "parts": 1})
    assert model.osme.pooling == "gap" and model.osme.w3[0].out_features == 5
    assert model.fc.in_features == 5
    assert model_of("mamc", {"grid": 3}).osme.grid == 3
    seen = []
    real = mamc_module.mamc_loss
    monkeypatch.setattr(mamc_module, "mamc_loss",
                        lambda *args: seen.append(args[2:]) or real(*args))
    opts = {"self_positive": True, "normalize": True, "divisor": "2NP"}
    model_of("mamc", opts).train()(*batch("mamc"))
    assert seen == [(True, True, "2NP")]
    _, losses = model_of("mamc", {"lam": 0.0}).train()(*batch("mamc"))
    assert set(losses) == {"ce"}


def test_npair_terms_per_anchor_against_the_loop_definition():
    """sum_{j in P_a} log(1 + sum_{k in N_a} exp(s_ak - s_aj)) for an asymmetric s."""
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(4, 4, generator=g, dtype=torch.float64)
    pos = torch.tensor([[0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]]).bool()
    neg = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0]]).bool()
    expected = []
    for a in range(4):
        expected.append(sum(
            torch.log(1 + sum(torch.exp(sim[a, k] - sim[a, j]) for k in range(4) if neg[a, k]))
            for j in range(4) if pos[a, j]))
    torch.testing.assert_close(npair_terms(sim, pos, neg), torch.stack(expected))


# --- MC-Loss ---

def test_mcloss_adds_no_saved_state_and_gives_one_channel_per_class_at_xi_one():
    """The loss adds no parameters and no saved buffers: an MC-Loss model's weights file has
    the keys of the plain GAP classifier's (as the module docstring says)."""
    assert set(model_of("mcloss").state_dict()) == set(model_of("baseline").state_dict())
    assert channel_groups(24, 24) == [1] * 24
    assert channel_groups(25, 24) == [1] * 23 + [2]


def test_mcloss_masks_are_random_within_each_group():
    """mask="sample": floor(xi/2) zeros per group, placed at random in each group's slots
    (every slot of a group of 4 is dropped in some draw)."""
    torch.manual_seed(0)
    mc = MCLoss([4, 4, 4], mask="sample")          # three groups of 4
    m = mc.channel_mask(200, torch.device("cpu"))  # (200, 3, 4)
    assert (m.sum(-1) == 2).all()
    assert (m == 0).any(0).all()


# --- bilinear pooling, attention evidence ---

def test_bilinear_pool_is_finite_on_a_dead_channel_and_float32_under_bfloat16():
    torch.manual_seed(0)
    fmap = torch.rand(2, 3, 4, 4)
    fmap[:, 1] = 0.0                               # a ReLU channel that never fires
    out = bilinear_pool(fmap)
    assert torch.isfinite(out).all()
    low = bilinear_pool(fmap.bfloat16())
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, bilinear_pool(fmap.bfloat16().float()))


def test_part_hits_count_a_peak_at_exactly_the_radius():
    maps = torch.zeros(1, 4, 4)
    maps[0, 0, 0] = 1.0                            # peak at pixel (4, 4) of a 32 px image
    parts = torch.tensor([[[4.0, 10.0, 1.0]]])     # 6 px below it
    assert peak_on_part(maps, parts, torch.tensor([[True]]), 32, 6.0).item()
    assert nearest_part(torch.tensor([[4.0, 4.0]]), parts, 6.0).tolist() == [0]
    # a 2 x 4 grid (cells 8 x 16 px) on 32 px: centres x in {4, 12, 20, 28}, y in {8, 24};
    # a part at (4, 8) with radius 8 covers (4, 8) and (12, 8) only; a second image's part
    # at (28, 24) covers (28, 24) and (20, 24)
    parts2 = torch.tensor([[[4.0, 8.0, 1.0]], [[28.0, 24.0, 1.0]]])
    rate = chance_on_part((2, 4), parts2, torch.tensor([[True], [True]]), 32, 8.0)
    assert rate.tolist() == [2 / 8, 2 / 8]


# --- defaults, seen through what they build (a signature can hide a default, e.g. behind a
# wrapper, so the built modules are compared) ---

def _settings(module: nn.Module) -> dict:
    """Every module's plain settings (numbers, strings, tuples) and its repr."""
    out = {"repr": repr(module)}
    for name, m in module.named_modules():
        for k, v in vars(m).items():
            if not k.startswith("_") and isinstance(v, (int, float, str, bool, tuple, type(None))):
                out[f"{name}.{k}"] = v
    out["state"] = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return out


@pytest.mark.parametrize("method", sorted(MODEL_CLASSES))
def test_a_model_built_with_its_defaults_is_the_one_built_with_the_books_settings(method):
    explicit = dict(DEFAULTS[method])
    if method == "rra":
        explicit.pop("cam_weights")
    torch.manual_seed(0)
    default = MODEL_CLASSES[method](SmallResNet((6, 48), (1, 1)), 24)
    torch.manual_seed(0)
    given = MODEL_CLASSES[method](SmallResNet((6, 48), (1, 1)), 24, **explicit)
    assert _settings(default) == _settings(given)


@pytest.mark.parametrize("cls,args,expected", [
    (OSME, (64,), PART_DEFAULTS[0][1]), (BasicBlock, (4, 4, 1), {"dilation": 1}),
    (SqueezeExcite, (64,), {"reduction": 16}), (APIModule, (8,), {"dropout": 0.5}),
    (LinearHead, (4, 3), {"dropout": 0.0}), (MCLoss, ([2, 3],), {"mask": "batch"}),
    (SmallResNet, (), PART_DEFAULTS[1][1]),
], ids=lambda v: getattr(v, "__name__", ""))
def test_parts_built_with_their_defaults_are_the_books(cls, args, expected):
    torch.manual_seed(0)
    a = cls(*args)
    torch.manual_seed(0)
    b = cls(*args, **expected)
    assert _settings(a) == _settings(b)


def test_small_modules_keep_at_least_one_channel():
    """Widths of c / r (SE), c / 2 (non-local) and the patch side never drop below 1, and
    not to 2 either."""
    assert SqueezeExcite(8).w1.out_features == 1
    assert NonLocal(3).theta.out_channels == 1
    p = cut(torch.rand(1, 1, 2, 2), torch.tensor([[[1.0, 1.0, 2.0, 2.0]]]), 1)
    assert p.shape == (1, 1, 1, 1, 1)
    model = model_of("rra").eval()
    assert model.patch_features(torch.rand(1, 3, 2, 2, dtype=torch.float64),
                                torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])).shape == (1, 1, 10)


def test_no_convolution_before_a_batch_norm_has_a_bias():
    """A batch norm's shift makes the bias before it redundant: the backbone's convolutions,
    CIN's phi, the non-local block's W_z and the bilinear head's 1x1 reduction have none."""
    convs = [m for m in SmallResNet((4, 6), (1, 1)).modules() if isinstance(m, nn.Conv2d)]
    convs += [SCI(4).phi, NonLocal(4).w_z, model_of("bilinear").reduce[0]]
    assert all(c.bias is None for c in convs)
    reduce = model_of("bilinear").reduce
    assert [type(m) for m in reduce] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert reduce[0].kernel_size == (1, 1)


@pytest.mark.parametrize("block", ["sci", "nonlocal"])
def test_interaction_blocks_in_float32_are_the_float64_computation(block):
    """The c x c (or l x l) products run in the input's precision, autocast off."""
    torch.manual_seed(0)
    m = (SCI(6) if block == "sci" else NonLocal(6)).eval()
    m.bn.weight.data.fill_(1.0)
    x = torch.randn(2, 6, 5, 4)
    out32 = m(x)
    out64 = m.double()(x.double())
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-6)


# --- RRA settings ---

def test_rra_accepts_one_step_and_the_whole_image_as_patch_and_refuses_the_rest():
    RRANet(SmallResNet((6,), (1,)), 3, steps=1, patch=1.0)
    for bad in ({"steps": 0}, {"patch": 0.0}, {"patch": 1.5}):
        with pytest.raises(ValueError):
            RRANet(SmallResNet((6,), (1,)), 3, **bad)


def test_rra_without_an_lstm_has_no_attention_and_averages_the_steps():
    model = model_of("rra", {"lstm": False, "hidden": 5}).eval()
    assert model.attend is None and model.local_head.fc.in_features == 10
    assert not any(k.startswith(("attend.", "lstm.")) for k in model.state_dict())
    x, _ = batch("rra")
    with torch.no_grad():
        a = model.attention_over_time(x)
    torch.testing.assert_close(a, torch.full((len(x), 4), 0.25, dtype=a.dtype))
    lstm = model_of("rra", {"hidden": 5})
    assert lstm.local_head.fc.in_features == 5 and lstm.attend.w.bias is None


def test_rra_distinct_sequences_take_as_many_proposals_as_steps():
    model = model_of("rra", {"source": "peaks", "sequence": "distinct", "proposals": 2,
                             "steps": 4}).eval()
    x, _ = batch("rra")
    assert model.candidates(x, model.features(x)).shape[1] == 4
    one = model_of("rra", {"source": "peaks", "proposals": 1}).eval()
    assert one.candidates(x, one.features(x)).shape[1] == 1


def test_rra_whole_image_control_feeds_gap_of_the_local_network_at_every_step():
    model = model_of("rra", {"local_input": "image"}).eval()
    x, _ = batch("rra")
    with torch.no_grad():
        v = model.sequences(x, model.features(x))
        expected = gap(model.local(x))[:, None, None].expand(-1, 1, 4, -1)
    assert v.shape == expected.shape
    torch.testing.assert_close(v, expected)


def test_rra_random_proposals_draw_every_rank_including_the_first():
    model = model_of("rra", {"source": "peaks", "proposals": 2}).eval()
    x, _ = batch("rra")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        boxes = model.candidates(x, model.features(x))
        drawn = torch.cat([model.random_proposals(x, g) for _ in range(10)], 1)
    for i in range(len(x)):
        ranks = {int((boxes[i] == d).all(1).nonzero()[0]) for d in drawn[i]}
        assert ranks == {0, 1}


def test_rra_read_outs_on_the_models_own_peaks():
    model = model_of("rra", {"source": "peaks", "proposals": 3}).eval()
    x, _ = batch("rra")
    with torch.no_grad():
        torch.testing.assert_close(model.attention_over_time(x),
                                   model.local_stream(x, model.features(x))[1])
        boxes = model.candidates(x, model.features(x))[:, :1]
        torch.testing.assert_close(model.step_logits(x), model.step_logits(x, boxes))


# --- API-Net, CIN, MAMC and MC-Loss settings ---

def test_apinet_settings_reach_its_modules(monkeypatch):
    model = model_of("apinet", {"hidden": 7})
    assert model.api.map1.out_features == 7
    calls = []
    real = apinet_module.random_pair_indices
    monkeypatch.setattr(apinet_module, "random_pair_indices",
                        lambda y: calls.append(1) or real(y))
    model_of("apinet", {"pairs": "random"}).train()(*batch("apinet"))
    assert calls == [1]
    model_of("apinet").train()(*batch("apinet"))
    assert calls == [1]


def test_cin_contrastive_settings():
    with pytest.raises(ValueError):
        ChannelInteractionNet(SmallResNet((6,), (1,)), 3, block="se", contrastive="sci")
    none = ChannelInteractionNet(SmallResNet((6,), (1,)), 3, contrastive="none")
    assert not hasattr(none, "h")
    assert hasattr(ChannelInteractionNet(SmallResNet((6,), (1,)), 3), "h")


def test_mamc_part_dim_is_passed_down():
    model = model_of("mamc", {"part_dim": 3})
    assert model.osme.w3[0].out_features == 3 and model.fc.in_features == 2 * 3


def test_mcloss_masks_leave_the_padding_alone_in_uneven_groups():
    """Groups of 2, 3 and 3 channels (xi_max = 3): floor(xi/2) real channels dropped per
    group, never a padding slot, and the mask setting reaches the loss."""
    torch.manual_seed(0)
    mc = MCLoss([2, 3, 3], mask="sample")
    m = mc.channel_mask(100, torch.device("cpu"))
    assert (m.sum(-1) == torch.tensor([1.0, 2.0, 2.0])).all()
    assert (m[:, 0, 2] == 0).all()
    model = model_of("mcloss", {"mask": "sample"}).train()
    assert model.mc.mask == "sample"
    x, y = batch("mcloss")
    model(x, y)                                    # a mask per image in training
    fmap = model.features(x)
    assert [t.shape for t in model.mc(fmap, y)] == [torch.Size([]), torch.Size([])]
    torch.testing.assert_close(model.mc.eval()(fmap, y)[0], model.mc.discriminality(fmap, y))
    torch.testing.assert_close(model.mc(fmap, y)[1], model.mc.diversity(fmap))


# --- backbones, by name ---

def test_build_backbone_passes_a_torchvision_resnets_files(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), tmp_path / "r18.pt")
    net = build_backbone("resnet18", weights_path=str(tmp_path / "r18.pt"), output_stride=32)
    torch.testing.assert_close(net.body[0].weight, ref.conv1.weight)


def test_off_grid_boxes_are_roi_align_with_two_by_two_samples_per_bin():
    """The loop definition: each output cell averages 2 x 2 bilinear samples at pixel centres
    (aligned: the box's corners are pixel edges)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 12, 12, generator=g, dtype=torch.float64)
    box = (2.25, 3.5, 8.75, 9.0)                   # x0, y0, x1, y1: 6.5 x 5.5 pixels
    side = 3
    out = cut(x, torch.tensor([[box]], dtype=torch.float64), side)[0, 0]

    def sample(c, yy, xx):
        y0, x0 = int(yy), int(xx)
        ly, lx = yy - y0, xx - x0
        return ((1 - ly) * (1 - lx) * x[0, c, y0, x0] + (1 - ly) * lx * x[0, c, y0, x0 + 1]
                + ly * (1 - lx) * x[0, c, y0 + 1, x0] + ly * lx * x[0, c, y0 + 1, x0 + 1])
    bw, bh = (box[2] - box[0]) / side, (box[3] - box[1]) / side
    for c in range(2):
        for i in range(side):
            for j in range(side):
                pts = [(box[1] - 0.5 + (i + (sy + 0.5) / 2) * bh,
                        box[0] - 0.5 + (j + (sx + 0.5) / 2) * bw)
                       for sy in range(2) for sx in range(2)]
                ref = sum(sample(c, yy, xx) for yy, xx in pts) / 4
                assert out[c, i, j].item() == pytest.approx(ref.item(), abs=1e-12)


def test_pair_outputs_hold_the_mutual_vector_and_y():
    """What the chapters' figures read from pair_forward: API-Net's x_m = f_m([x_1, x_2]) of
    each pair, CIN's Y = W X of the batch."""
    model = model_of("apinet").eval()
    x, y = batch("apinet")
    with torch.no_grad():
        out = model.pair_forward(x, y)
        f = out["features"]
        torch.testing.assert_close(out["x_m"], model.api(f[out["i1"]], f[out["i2"]])[2])
    cin = model_of("cin").eval()
    x, y = batch("cin")
    with torch.no_grad():
        fmap = cin.backbone(x)
        torch.testing.assert_close(cin.pair_forward(fmap, y)["y"], cin.block.relations(fmap)[2])


def test_a_one_pixel_patch_is_read_at_one_pixel():
    """patch * min(H, W) rounds to a side of 1 on a 2 x 2 image: the local network sees that
    pixel alone, not an upsampled copy."""
    model = model_of("rra").eval()
    x = torch.rand(1, 3, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        v = model.patch_features(x, torch.tensor([[[1.0, 0.0, 2.0, 1.0]]], dtype=torch.float64))
        torch.testing.assert_close(v[:, 0], gap(model.local(x[..., 0:1, 1:2])))


def test_a_torchvision_resnet_by_name_asks_torchvision_for_its_imagenet_weights(monkeypatch):
    seen = []
    real = torchvision.models.resnet18

    def fake(weights=None):
        seen.append(weights)
        return real()
    monkeypatch.setattr(torchvision.models, "resnet18", fake)
    build_backbone("resnet18", pretrained=True)
    assert seen == [torchvision.models.ResNet18_Weights.DEFAULT]
    assert TorchvisionResNet().out_channels == 2048          # the default is ResNet-50
