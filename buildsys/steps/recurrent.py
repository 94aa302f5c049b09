"""Recurrent layers (LSTM, GRU, RNN) captured with a dynamic sequence length and written as ONNX recurrent ops.

Without help, torch.export runs an RNN's recurrence as a Python loop over the
time steps of the traced input, which pins the sequence length. torch.onnx's own
capture swaps in while-loop decompositions for LSTM and GRU (torch.export._patches)
and keeps the `aten.lstm` / `aten.gru` nodes, which it translates into ONNX `LSTM`
and `GRU`. The same is done here for the plain RNN (`aten.rnn_tanh`, `aten.rnn_relu`),
which torch covers with neither a decomposition nor a translation: a while-loop
decomposition of the same shape as torch's, and a translation into ONNX `RNN`.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator


@contextlib.contextmanager
def recurrent_decompositions() -> Iterator[None]:
    """While it lasts, torch.export keeps every recurrent layer as one node over a symbolic sequence length.

    The conversion to ONNX must run inside it as well: it recomputes the node's
    shapes with the decomposition in place (outside, the output's length is fixed).
    """
    import torch
    from torch.export._patches import (
        _register_rnn_while_loop_decomposition,
        register_gru_while_loop_decomposition,
        register_lstm_while_loop_decomposition,
    )

    with register_lstm_while_loop_decomposition(), register_gru_while_loop_decomposition(), \
            _register_rnn_while_loop_decomposition(torch.ops.aten.rnn_tanh.input, _rnn_while_loop(torch.tanh)), \
            _register_rnn_while_loop_decomposition(torch.ops.aten.rnn_relu.input, _rnn_while_loop(torch.relu)):
        yield


def onnx_translations() -> dict:
    """The ONNX translations torch.onnx lacks: the plain RNN's two operators into ONNX `RNN`."""
    import torch

    return {torch.ops.aten.rnn_tanh.input: _onnx_rnn("Tanh"), torch.ops.aten.rnn_relu.input: _onnx_rnn("Relu")}


def _rnn_while_loop(nonlinearity):
    """`aten.rnn_*.input` as torch.export._patches writes the GRU's: one while loop per layer and direction."""

    def rnn(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
        import torch
        from torch._decomp.decompositions import _rnn_helper, gather_params

        layer = functools.partial(_one_layer, nonlinearity=nonlinearity)
        out, finals = _rnn_helper(input, list(hx.unbind(0)), gather_params(params, has_biases, False), has_biases,
                                  num_layers, dropout, train, bidirectional, batch_first, layer)
        return out, torch.stack(finals, 0)

    return rnn


def _one_layer(inp, hidden, params, has_biases, reverse=False, *, nonlinearity):
    import torch
    import torch.nn.functional as F
    from torch._higher_order_ops.while_loop import while_loop
    from torch.export._patches import _clone_tensors_that_alias

    ih_weight, hh_weight = params[0], params[1]
    ih_bias, hh_bias = (params[2], params[3]) if has_biases else (None, None)
    steps = F.linear(inp, ih_weight, ih_bias)
    steps = steps.flip(0) if reverse else steps
    # while_loop refuses closure inputs that share storage (flattened RNN weights can)
    hh_weight, hh_bias = _clone_tensors_that_alias((hh_weight, hh_bias))
    state = hidden.unsqueeze(0)
    empty = torch.empty(steps.size(0), *tuple(state.shape[1:]), dtype=state.dtype, device=state.device)

    def cond(i, out, h):
        return i < steps.size(0)

    def body(i, out, h):
        t = i.item()
        torch._check(t >= 0)
        torch._check(t < steps.size(0))
        h = nonlinearity(F.linear(h, hh_weight, hh_bias) + steps[t])
        out = out.clone()
        out[t] = h.squeeze(0)
        return i + 1, out, h

    _, out, final = while_loop(cond, body, [torch.tensor(0, dtype=torch.int64), empty, state])
    return (out.flip(0) if reverse else out), final.squeeze(0)


def _onnx_rnn(activation: str):
    """A torch.onnx translation of `aten.rnn_*.input`: one ONNX `RNN` per layer, both directions in one node."""

    def aten_rnn(input, hx, params, has_biases: bool, num_layers: int, dropout: float, train: bool,
                 bidirectional: bool, batch_first: bool):
        from onnxscript.onnx_opset import opset18 as op

        directions = 2 if bidirectional else 1
        per_direction = 4 if has_biases else 2
        if batch_first:
            input = op.Transpose(input, perm=[1, 0, 2])
        finals = []
        for layer in range(num_layers):
            first = layer * directions
            h0 = op.Slice(hx, [first], [first + directions], axes=[0])
            w, r, b = [], [], []
            for d in range(directions):
                at = (first + d) * per_direction
                w.append(op.Unsqueeze(params[at], [0]))
                r.append(op.Unsqueeze(params[at + 1], [0]))
                if has_biases:
                    b.append(op.Unsqueeze(op.Concat(params[at + 2], params[at + 3], axis=0), [0]))
            y, y_h = op.RNN(input, _concat(op, w), _concat(op, r), _concat(op, b) if has_biases else None, None, h0,
                            direction="bidirectional" if bidirectional else "forward",
                            hidden_size=hx.shape[2], activations=[activation] * directions)
            # y is [steps, directions, batch, hidden]; the next layer reads [steps, batch, directions * hidden]
            input = op.Reshape(op.Transpose(y, perm=[0, 2, 1, 3]), op.Constant(value_ints=[0, 0, -1]))
            finals.append(y_h)
        if batch_first:
            input = op.Transpose(input, perm=[1, 0, 2])
        return input, _concat(op, finals)

    return aten_rnn


def _concat(op, values: list):
    return values[0] if len(values) == 1 else op.Concat(*values, axis=0)
