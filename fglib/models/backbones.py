"""Backbones: a network that maps images (B, 3, H, W) to a feature map (B, C, H/s, W/s).

Every backbone exposes `out_channels` (C) and `stride` (s), so heads never hard-code either.
- `SmallResNet`: the book-scale network, trained on a CPU; widths and output stride configurable.
  From scratch, or from a saved state_dict (`weights_path`): the book's pretraining run on a
  generated, disjoint "ImageNet" for `pretrained=True`, a file the experiment layer finds and hands
  down (fglib.experiments.runner.run_files).
- `TorchvisionResNet`: ResNet-18/50 from torchvision for the paper scale, ImageNet weights through
  torchvision's weights API or a saved state_dict file.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class PretrainedWeightsError(RuntimeError):
    """The ImageNet weights of a torchvision backbone could not be fetched."""


class BasicBlock(nn.Module):
    """y = relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)), He et al. 2016."""

    def __init__(self, c_in: int, c_out: int, stride: int, dilation: int = 1):
        super().__init__()
        d = dilation                       # dilated 3x3 convs keep the receptive field of a stride
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, d, dilation=d, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, d, dilation=d, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A narrow ResNet for small images: 3x3 stem, then one stage per width, each halving the size.

    With widths (16, 32, 64, 128) the output stride is 8 (the first stage keeps the resolution).
    A smaller `output_stride` (a power of 2) replaces the last stages' strides with dilation, as
    DeepLab does: the same weights, a larger final map (48 px at output stride 4: 12 x 12).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), blocks: tuple[int, ...] = (1, 1, 1, 1),
                 in_channels: int = 3, output_stride: int | None = None):
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError(f"widths {widths} and blocks {blocks} must have the same length (one per stage)")
        natural = 2 ** (len(widths) - 1)
        output_stride = output_stride or natural
        if output_stride not in [2 ** i for i in range(len(widths))]:
            raise ValueError(f"output_stride={output_stride} is not possible with {len(widths)} stages: use a "
                             f"power of 2 from 1 to {natural}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, c_in, s, dilation = [], widths[0], 1, 1
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            if s * stride > output_stride:            # past the output stride: dilate instead
                stride, dilation = 1, dilation * 2
            s *= stride
            stages.append(nn.Sequential(*[BasicBlock(c_in if j == 0 else w, w, stride if j == 0 else 1,
                                                     dilation) for j in range(n)]))
            c_in = w
        self.stages = nn.Sequential(*stages)
        self.out_channels = widths[-1]
        self.stride = s
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class TorchvisionResNet(nn.Module):
    """torchvision's ResNet without its pooling and classifier: the last stage's feature map."""

    def __init__(self, name: str = "resnet50", pretrained: bool = False, weights_path: str | Path | None = None):
        super().__init__()
        import torchvision

        builders = {"resnet18": torchvision.models.resnet18, "resnet34": torchvision.models.resnet34,
                    "resnet50": torchvision.models.resnet50, "resnet101": torchvision.models.resnet101}
        if name not in builders:
            raise ValueError(f"unknown torchvision backbone {name!r}; choose one of {sorted(builders)}")
        weights = None
        if pretrained and weights_path is None:
            # torchvision's weights API: downloads (or reads from the torch hub cache) the ImageNet weights
            weights = torchvision.models.get_model_weights(name).DEFAULT
        try:
            net = builders[name](weights=weights)
        except OSError as e:                      # urllib's URLError, a timeout, a refused connection
            raise PretrainedWeightsError(
                f"the ImageNet weights of {name} could not be fetched ({e}). Ways out: pass a saved "
                f"state_dict as model.weights_path; put {weights.url.rsplit('/', 1)[-1]} into the torch "
                f"hub cache ({torch.hub.get_dir()}/checkpoints); or train from scratch with "
                f"model.pretrained=false") from None
        if weights_path is not None:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}   # the ImageNet classifier
            try:
                missing, _ = net.load_state_dict(state, strict=False)
            except RuntimeError as e:
                raise ValueError(f"{weights_path} does not fit {name}: {e}") from None
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing:
                raise ValueError(f"{weights_path} lacks {len(missing)} weights of {name}, e.g. {missing[:3]}: "
                                 f"is it a {name} state_dict?")
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                                  net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_channels = net.fc.in_features
        self.stride = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def load_small_resnet(net: SmallResNet, path: str | Path) -> SmallResNet:
    """Load a SmallResNet state_dict, or a whole model's (keys 'backbone.*', the head dropped)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit this small_resnet (widths and blocks must match the "
                         f"weights'): {str(e)[:300]}") from None
    return net


def build_backbone(name: str, widths: tuple[int, ...] = (16, 32, 64, 128), blocks: tuple[int, ...] = (1, 1, 1, 1),
                   pretrained: bool = False, weights_path: str | None = None,
                   output_stride: int | None = None) -> nn.Module:
    """'small_resnet' or a torchvision ResNet name."""
    if name == "small_resnet":
        net = SmallResNet(tuple(widths), tuple(blocks), output_stride=output_stride)
        if weights_path is None and pretrained:
            raise ValueError(
                "a pre-trained small_resnet starts from a weights file, and none was given: pass "
                "weights_path (the engine passes RunFiles.backbone, which "
                "fglib.experiments.runner.run_files finds: the book's pretraining run), or "
                "build it with pretrained=False")
        return net if weights_path is None else load_small_resnet(net, weights_path)
    if output_stride not in (None, 32):
        raise ValueError(f"model.output_stride={output_stride} is only supported by small_resnet; "
                         f"torchvision ResNets keep their stride of 32")
    if name.startswith("resnet"):
        return TorchvisionResNet(name, pretrained, weights_path)
    raise ValueError(f"unknown backbone {name!r}: use 'small_resnet' or one of resnet18/34/50/101")
