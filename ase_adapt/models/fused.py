"""Fused kernels: the same functions as e3nn's tensor products, with fewer and larger operations.

:class:`FusedEdgeTP` is the interaction block's edge tensor product (``uvu``, per-edge weights) in
channel layout; :class:`FusedSelfConnection` its species-dependent self-connection (a
``FullyConnectedTensorProduct`` with scalar node attributes) as one matmul and one batched
matmul per irrep.

The interaction block's message is ``TP(x_j, Y(r_ij); R(|r_ij|))`` with per-edge weights. e3nn
evaluates it path by path on the ``mul_ir`` layout: it slices every input irrep and every path's
weights out of full-width edge tensors. On the CPU the backward of each slice is a zero-filled
full-size edge tensor, so a training step (forces by autograd, then the loss's backward through
them) spent about a third of its time in ``fill_`` and most of the rest in small elementwise ops.

Here the edge features live in channel layout ``[E, M, C]`` (``M`` = all m-components of the
input irreps) and every path is one column block of one matrix:

    Z[e, q, m]   = sum_j Y[e, j] * CG[j, q, m]          (one matmul; CG holds w3j * path weight)
    U[e, q, c]   = sum_m Z[e, q, m] * x_j[e, m, c]      (one batched matmul)
    msg[e, q, c] = U[e, q, c] * w[e, path(q), c]         (one gather of the radial weights)

``q`` runs over the output components of every path in the order of e3nn's (sorted) output
irreps, so converting the aggregated nodes back to ``mul_ir`` is a node-level reshape. No edge
tensor is sliced. The e3nn module stays the reference implementation
(:func:`reference_kernels` switches every block back to it; a test compares the two).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from e3nn import o3
from torch import nn

__all__ = ["FusedEdgeTP", "FusedSelfConnection", "reference_kernels", "fused_enabled"]

_STATE = {"fused": True}


def fused_enabled() -> bool:
    """Whether interaction blocks use the fused kernel (True unless inside :func:`reference_kernels`)."""
    return _STATE["fused"]


@contextlib.contextmanager
def reference_kernels() -> Iterator[None]:
    """Evaluate every interaction block with e3nn's plain TensorProduct (the reference path)."""
    old = _STATE["fused"]
    _STATE["fused"] = False
    try:
        yield
    finally:
        _STATE["fused"] = old


def _uniform_mul(irreps: o3.Irreps) -> int | None:
    muls = {mul for mul, _ in irreps}
    return muls.pop() if len(muls) == 1 else None


class FusedEdgeTP(nn.Module):
    """Channel-layout evaluation of an e3nn ``TensorProduct`` with ``uvu`` paths and per-edge weights.

    Built from the e3nn module it replaces (its instructions and path weights), so both compute
    one function. Requirements (else :meth:`supports` is False and the block keeps e3nn): every
    instruction is ``uvu`` with weights, the second input has multiplicity 1 (spherical
    harmonics), and every irrep of the first input and of the output has one multiplicity ``C``.
    The buffers are derived, never saved (``persistent=False``): checkpoints are unchanged.
    """

    @staticmethod
    def supports(tp: o3.TensorProduct) -> bool:
        c = _uniform_mul(tp.irreps_in1)
        return (
            c is not None
            and all(mul == 1 for mul, _ in tp.irreps_in2)
            and all(mul == c for mul, _ in tp.irreps_out)
            and not tp.shared_weights and not tp.internal_weights
            and all(ins.connection_mode == "uvu" and ins.has_weight for ins in tp.instructions)
        )

    def __init__(self, tp: o3.TensorProduct) -> None:
        super().__init__()
        if not self.supports(tp):
            raise ValueError(f"FusedEdgeTP cannot evaluate {tp}")
        self.channels = _uniform_mul(tp.irreps_in1)
        self.irreps_in1, self.irreps_in2, self.irreps_out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        m_in, m_sh = self.irreps_in1.dim // self.channels, self.irreps_in2.dim
        # Output components q in e3nn's output order: slot i_out (C channels of one irrep), then m.
        q_start, q = [], 0
        for _, ir in self.irreps_out:
            q_start.append(q)
            q += ir.dim
        self.num_q = q
        m_start = [0]
        for _, ir in self.irreps_in1:
            m_start.append(m_start[-1] + ir.dim)
        sh_start = [s.start for s in self.irreps_in2.slices()]
        dtype = torch.get_default_dtype()
        cg = torch.zeros(m_sh, m_in, q, dtype=torch.float64)
        q_path = torch.zeros(q, dtype=torch.int64)
        for p, ins in enumerate(tp.instructions):
            l1, l2, l3 = (self.irreps_in1[ins.i_in1].ir.l, self.irreps_in2[ins.i_in2].ir.l,
                          self.irreps_out[ins.i_out].ir.l)
            w3j = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)  # [i (in1), j (sh), k (out)]
            m0, j0, k0 = m_start[ins.i_in1], sh_start[ins.i_in2], q_start[ins.i_out]
            cg[j0:j0 + 2 * l2 + 1, m0:m0 + 2 * l1 + 1, k0:k0 + 2 * l3 + 1] += (
                ins.path_weight * w3j.permute(1, 0, 2))
            q_path[k0:k0 + 2 * l3 + 1] = p
        if len({ins.i_out for ins in tp.instructions}) != len(tp.instructions):
            raise ValueError("FusedEdgeTP needs one instruction per output slot (as the interaction block builds)")
        self.register_buffer("cg", cg.permute(0, 2, 1).reshape(m_sh, q * m_in).to(dtype), persistent=False)
        self.register_buffer("q_path", q_path, persistent=False)
        self.num_paths = len(tp.instructions)
        self.m_in = m_in
        self._in_slices = [(s.start, s.stop, ir.dim) for s, (_, ir) in zip(self.irreps_in1.slices(), self.irreps_in1)]
        self._out_dims = [ir.dim for _, ir in self.irreps_out]

    def to_channels(self, x: torch.Tensor) -> torch.Tensor:
        """[N, irreps_in1.dim] (e3nn ``mul_ir``) -> [N, M, C] (m-major, channels contiguous)."""
        n = x.shape[0]
        if len(self._in_slices) == 1:
            return x.reshape(n, self.channels, self.m_in).transpose(1, 2)
        return torch.cat([x[:, a:b].reshape(n, self.channels, d).transpose(1, 2) for a, b, d in self._in_slices],
                         dim=1)

    def from_channels(self, y: torch.Tensor) -> torch.Tensor:
        """[N, Q, C] -> [N, irreps_out.dim] (e3nn ``mul_ir``, slot by slot)."""
        n = y.shape[0]
        parts = torch.split(y, self._out_dims, dim=1)
        return torch.cat([p.transpose(1, 2).reshape(n, -1) for p in parts], dim=1)

    def messages(self, x_nodes: torch.Tensor, edge_sh: torch.Tensor, weights: torch.Tensor,
                 neighbour: torch.Tensor) -> torch.Tensor:
        """[E, Q, C] messages of the edges' senders ``x_nodes[neighbour]`` (channel layout)."""
        e = edge_sh.shape[0]
        xj = self.to_channels(x_nodes).contiguous().index_select(0, neighbour)      # [E, M, C]
        z = (edge_sh @ self.cg).view(e, self.num_q, self.m_in)                      # [E, Q, M]
        u = torch.bmm(z, xj)                                                         # [E, Q, C]
        w = weights.view(e, self.num_paths, self.channels).index_select(1, self.q_path)  # [E, Q, C]
        return u * w


class FusedSelfConnection(nn.Module):
    """e3nn ``FullyConnectedTensorProduct(x, attrs)`` with scalar ``attrs`` (the species one-hot).

    For each path ``(l, 0e) -> l``: ``out[n, w, i] = c * sum_{u,v} x[n, u, i] a[n, v] W[u, v, w]``
    with ``c`` = path weight / sqrt(2l+1) (e3nn's w3j(l, 0, l)). Computed as the per-node matrix
    ``a @ W`` (one matmul) and one batched matmul. It holds only the paths' layout; the weight is
    read from the e3nn module at each call.
    """

    @staticmethod
    def supports(tp: o3.TensorProduct) -> bool:
        return (
            tp.internal_weights and tp.shared_weights
            and all(ir.l == 0 and ir.p == 1 for _, ir in tp.irreps_in2)
            and len({ins.i_out for ins in tp.instructions}) == len(tp.instructions)
            and all(ins.connection_mode == "uvw" and ins.has_weight for ins in tp.instructions)
        )

    def __init__(self, tp: o3.TensorProduct) -> None:
        super().__init__()
        if not self.supports(tp):
            raise ValueError(f"FusedSelfConnection cannot evaluate {tp}")
        slices1, slices2 = tp.irreps_in1.slices(), tp.irreps_in2.slices()
        self._paths, offset = [], 0
        for ins in tp.instructions:
            (mul1, ir1), (mul2, _), (mulo, iro) = (tp.irreps_in1[ins.i_in1], tp.irreps_in2[ins.i_in2],
                                                   tp.irreps_out[ins.i_out])
            n = mul1 * mul2 * mulo
            self._paths.append((slices1[ins.i_in1], slices2[ins.i_in2], offset, (mul1, mul2, mulo), ir1.dim,
                                ins.i_out, ins.path_weight / math.sqrt(iro.dim)))
            offset += n
        self._out = [(mul, ir.dim) for mul, ir in tp.irreps_out]

    def forward(self, tp: o3.TensorProduct, x: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
        """``tp(x, attrs)`` for the module this was built from (its current weight is read)."""
        weight = tp.weight
        n = x.shape[0]
        outs: list[torch.Tensor | None] = [None] * len(self._out)
        for s1, s2, offset, (mul1, mul2, mulo), dim, i_out, coeff in self._paths:
            w = weight[offset:offset + mul1 * mul2 * mulo].view(mul1, mul2, mulo)
            per_node = (attrs[:, s2] @ w.transpose(0, 1).reshape(mul2, mul1 * mulo)).view(n, mul1, mulo)
            y = torch.bmm(x[:, s1].view(n, mul1, dim).transpose(1, 2), per_node)   # [N, i, w]
            outs[i_out] = (y.transpose(1, 2) * coeff).reshape(n, mulo * dim)
        for k, (mul, dim) in enumerate(self._out):
            if outs[k] is None:
                outs[k] = x.new_zeros(n, mul * dim)
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
