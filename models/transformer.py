"""A small transformer encoder classifier for token sequences.

Inputs: ``input_ids`` int64 ``[batch, seq]`` and ``attention_mask`` int64
``[batch, seq]`` (1 = token, 0 = padding).  Output: ``logits``
``[batch, num_classes]`` from a masked mean-pool of the last hidden states.

The attention is written out by hand instead of using ``nn.TransformerEncoder``:
its inference fast path (nested tensors, ``_transformer_encoder_layer_fwd``)
does not export, and a hand-written version exports with ``batch`` and ``seq``
symbolic under both ``torch.onnx.export(dynamo=True)`` and the TorchScript
exporter.  Everything shape-related is derived from tensors (slicing a
position-id buffer, ``unflatten``/``flatten``), never from Python ints, so no
size gets baked into the graph.

The model is robust to rows that are all padding: masked scores use a large
finite negative (not ``-inf``, so softmax never sees a row of ``-inf`` and the
value also survives fp16), and the pooled sum is divided by
``clamp(count, min=1)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# Finite "minus infinity" for masked attention scores (representable in fp16).
_MASK_VALUE = -1.0e4


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        self.nhead = nhead
        self.head_dim = d_model // nhead
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D]; key_mask: bool [B, 1, 1, S], True = attend.
        qkv = self.qkv(x).unflatten(-1, (3, self.nhead, self.head_dim))  # [B, S, 3, H, Dh]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, S, Dh]
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        scores = scores.masked_fill(~key_mask, _MASK_VALUE)
        attn = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(attn, v)  # [B, H, S, Dh]
        ctx = ctx.transpose(1, 2).flatten(2)  # [B, S, D]
        return self.out(ctx)


class EncoderLayer(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)); x + FFN(LN(x))."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, nhead)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, dim_feedforward)
        self.ff2 = nn.Linear(dim_feedforward, d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        x = x + self.ff2(F.gelu(self.ff1(self.norm2(x))))
        return x


class TransformerEncoderClassifier(nn.Module):
    def __init__(self, vocab_size: int = 1000, d_model: int = 64, nhead: int = 4,
                 num_layers: int = 2, max_len: int = 256, num_classes: int = 2,
                 dim_feedforward: int | None = None) -> None:
        super().__init__()
        self.max_len = max_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.register_buffer("position_ids", torch.arange(max_len).unsqueeze(0), persistent=False)
        ff = dim_feedforward or 4 * d_model
        self.layers = nn.ModuleList(EncoderLayer(d_model, nhead, ff) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Slice, not torch.arange(python_int): stays symbolic in both exporters.
        positions = self.position_ids[:, : input_ids.shape[1]]  # [1, S]
        x = self.tok_emb(input_ids) + self.pos_emb(positions)  # [B, S, D]
        keep = attention_mask != 0  # [B, S] bool
        key_mask = keep[:, None, None, :]  # [B, 1, 1, S]
        for layer in self.layers:
            x = layer(x, key_mask)
        x = self.norm(x)
        m = keep.unsqueeze(-1).to(x.dtype)  # [B, S, 1]
        pooled = (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # [B, D]
        return self.head(pooled)


def encoder(vocab_size: int = 1000, d_model: int = 64, nhead: int = 4, num_layers: int = 2,
            max_len: int = 256, num_classes: int = 2) -> nn.Module:
    """Factory used by ``recipes/transformer.yaml``."""
    return TransformerEncoderClassifier(
        vocab_size=vocab_size, d_model=d_model, nhead=nhead, num_layers=num_layers,
        max_len=max_len, num_classes=num_classes,
    ).eval()
