"""Layers the built-in backbones share.

`MaxPool2d`: torch's max pooling, computed where it is fast on a CPU. PyTorch's CPU kernel for
contiguous (NCHW) input is several times slower than its kernel for channels-last input
(about 13 ms against 1.5 ms for a 2x2 pool of 32 x 64 x 32 x 32 activations on one thread
here); in the small CNN's training step the change saves 5-10 % (with 1 or 2 torch threads).
A maximum is exact, so pooling a channels-last copy gives the same values and the same argmax
indices (the first maximum of each window, in the same window order), and the backward pass is
torch's own NCHW kernel with those indices: training is bit for bit what `torch.nn.MaxPool2d` trains
(`tests/test_models.py`). Only the convolutions keep their memory format: running them
channels-last would change the order of their sums, and with it every seeded result.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _ChannelsLastMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, size: int) -> torch.Tensor:
        out, indices = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), size, return_indices=True)
        indices = indices.contiguous()
        ctx.save_for_backward(x, indices)
        ctx.size = size
        return out.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, indices = ctx.saved_tensors
        k = [ctx.size, ctx.size]
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, k, k, [0, 0], [1, 1], False,
                                                                  indices)
        return grad_x, None


class MaxPool2d(nn.MaxPool2d):
    """`nn.MaxPool2d` with the same results, faster on a CPU for square windows that tile the input.

    Tiling windows: kernel = stride, no padding or dilation; anything else is torch's own path.
    """

    def _tiles(self, x: torch.Tensor) -> int | None:
        k, s = self.kernel_size, self.stride
        if (x.device.type != "cpu" or x.ndim != 4 or not x.is_contiguous() or self.return_indices or self.ceil_mode
                or k != s or not isinstance(k, int) or self.padding not in (0, (0, 0))
                or self.dilation not in (1, (1, 1)) or torch.compiler.is_compiling()):
            return None
        return k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Max pooling, on the faster channels-last path where the windows tile the input."""
        size = self._tiles(x)
        if size is None:
            return super().forward(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _ChannelsLastMaxPool.apply(x, size)
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), size).contiguous()
