"""Built-in backbones, each split into stages so that the first ones can become projections."""

from __future__ import annotations

from torch import nn

from fed_uml.models.layers import MaxPool2d
from fed_uml.models.registry import register_backbone


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_backbone("small_cnn", stages=4)
def small_cnn(in_chans: int, num_classes: int, width: int = 32, dropout: float = 0.0
              ) -> tuple[list[nn.Module], nn.Module]:
    """A 4-stage VGG-style CNN: fast enough for CPU experiments, with BN in every stage.

    Stage 0 (a 3x3 conv stem) is the default projection; the spatial size is halved after
    stages 1 and 2 and pooled away after stage 3.
    """
    w = width
    stages: list[nn.Module] = [
        nn.Sequential(*_conv_bn_relu(in_chans, w)),
        nn.Sequential(*_conv_bn_relu(w, 2 * w), MaxPool2d(2)),
        nn.Sequential(*_conv_bn_relu(2 * w, 4 * w), MaxPool2d(2)),
        nn.Sequential(*_conv_bn_relu(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    ]
    linear = nn.Linear(4 * w, num_classes)
    head = nn.Sequential(nn.Dropout(dropout), linear) if dropout else linear
    return stages, head


@register_backbone("resnet18", stages=5)
def resnet18(in_chans: int, num_classes: int, small_input: bool = False) -> tuple[list[nn.Module], nn.Module]:
    """The ResNet-18 of torchvision (random init); its stem (conv1, bn1, relu, maxpool) is stage 0.

    `small_input=True` swaps the 7x7/2 conv and the max-pool for a 3x3/1 conv, the usual
    change for 32-64 px tiles such as EuroSAT, so that layer4 still sees a few pixels.
    """
    # imported here: importing torchvision costs about 2 s (it loads torch._dynamo), which every
    # process of a simulation would otherwise pay at start-up whatever its backbone
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None, num_classes=num_classes)
    if small_input:
        stem = nn.Sequential(nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
    else:
        stem = nn.Sequential(
            nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False), net.bn1, net.relu, net.maxpool
        )
    stages: list[nn.Module] = [stem, net.layer1, net.layer2, net.layer3,
                               nn.Sequential(net.layer4, net.avgpool, nn.Flatten())]
    return stages, net.fc
