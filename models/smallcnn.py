"""A small image classifier: conv / BatchNorm / ReLU / pooling / linear.

Input ``[batch, 3, height, width]`` (any height/width >= 8: the head uses an
adaptive average pool), output ``[batch, num_classes]`` logits.
"""
from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(3, 16),
            nn.MaxPool2d(kernel_size=2, stride=2),
            _conv_bn_relu(16, 32),
            nn.MaxPool2d(kernel_size=2, stride=2),
            _conv_bn_relu(32, 64, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)
        # Non-trivial BatchNorm statistics (as after training), so that the
        # exported graph really has to fold/compute them; seeded by the caller.
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def smallcnn(num_classes: int = 10) -> nn.Module:
    """Factory used by ``recipes/smallcnn.yaml``."""
    return SmallCNN(num_classes=num_classes).eval()
