"""The shared policy in PyTorch, op for op the same as `citysignal.control.ai.forward` (NumPy).

Batched over time: movement features (T x M x 4) and green features (T x G x 2) give scores
(T x G) and values (T x N). Exported weights keep the NumPy parameter names, so the run-time
controller needs no torch; `tests/learn` checks that both give identical outputs.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from citysignal.control.ai import (
    ANCHOR_DECIMALS,
    GREEN_FEATURES,
    KEEP_TIE,
    MOVEMENT_FEATURES,
    ORDER_TIE,
    PARAM_NAMES,
    CityIndex,
)


def anchor_scores(
    serve_green: torch.Tensor,
    serve_mov: torch.Tensor,
    slots: torch.Tensor,
    green_int: torch.Tensor,
    local: torch.Tensor,
    always_served: torch.Tensor,
    mov: torch.Tensor,
    green: torch.Tensor,
) -> torch.Tensor:
    """`control.ai.anchor_scores` (Advanced-MP's score per green), batched over time."""
    full = mov[..., 5] > 0.5
    pressure = mov[..., 0] + mov[..., 4] - mov[..., 2]
    pressure = torch.where(full, pressure.clamp(max=0.0), pressure)
    running = torch.where(full | always_served, torch.zeros_like(pressure), mov[..., 1])
    shape = (mov.shape[0], green.shape[1])
    p = torch.zeros(shape, dtype=mov.dtype, device=mov.device).index_add(1, serve_green, pressure[:, serve_mov])
    r = torch.zeros(shape, dtype=mov.dtype, device=mov.device).index_add(1, serve_green, running[:, serve_mov])
    p = torch.round(p, decimals=ANCHOR_DECIMALS)
    r = torch.round(r, decimals=ANCHOR_DECIMALS)
    top = p[:, slots.clamp(min=0)].masked_fill((slots < 0)[None], float("-inf")).amax(dim=-1)[:, green_int]
    keep = (green[..., 0] > 0) & (r >= top)
    return torch.where(keep, top + KEEP_TIE, p) - ORDER_TIE * local


class SharedPolicy(nn.Module):
    def __init__(self, hidden: int = 32, alpha: float = 100.0, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)

        def weight(fan_in: int, fan_out: int, scale: float = 1.0) -> nn.Parameter:
            return nn.Parameter(torch.randn(fan_in, fan_out, generator=gen, dtype=torch.float64) * scale / fan_in**0.5)

        def zeros(n: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(n, dtype=torch.float64))

        self.w1, self.b1 = weight(MOVEMENT_FEATURES, hidden), zeros(hidden)
        self.w2, self.b2 = weight(hidden, hidden), zeros(hidden)
        self.w3, self.b3 = weight(hidden + GREEN_FEATURES, hidden), zeros(hidden)
        # Small output layer: the untrained policy is (a soft) Advanced-MP through `alpha`.
        self.w4, self.b4 = weight(hidden, 1, scale=0.01), zeros(1)
        self.alpha = nn.Parameter(torch.tensor([alpha], dtype=torch.float64))
        self.wv1, self.bv1 = weight(hidden, hidden), zeros(hidden)
        self.wv2, self.bv2 = weight(hidden, 1), zeros(1)

    def forward(
        self, index: CityIndex, mov: torch.Tensor, green: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dev = mov.device
        serve_green = torch.as_tensor(index.serve_green, device=dev)
        serve_mov = torch.as_tensor(index.serve_mov, device=dev)
        green_int = torch.as_tensor(index.green_int, device=dev)
        t = mov.shape[0]
        h = torch.relu(mov @ self.w1 + self.b1)
        h = torch.relu(h @ self.w2 + self.b2)
        emb = torch.zeros(t, index.n_greens, h.shape[-1], dtype=h.dtype, device=dev).index_add(
            1, serve_green, h[:, serve_mov]
        )
        z = torch.relu(torch.cat([emb, green], dim=-1) @ self.w3 + self.b3)
        slots = torch.as_tensor(index.slots, device=dev)
        local = torch.as_tensor(index.local, device=dev, dtype=mov.dtype)
        always_served = torch.as_tensor(index.always_served, device=dev)
        anchor = anchor_scores(serve_green, serve_mov, slots, green_int, local, always_served, mov, green)
        scores = (z @ self.w4)[..., 0] + self.b4[0] + self.alpha[0] * anchor
        pooled = torch.zeros(t, index.n_intersections, h.shape[-1], dtype=h.dtype, device=dev).index_add(
            1, green_int, emb
        )
        counts = torch.bincount(green_int, minlength=index.n_intersections).clamp(min=1).to(h.dtype)
        v = torch.relu((pooled / counts[None, :, None]) @ self.wv1 + self.bv1)
        values = (v @ self.wv2)[..., 0] + self.bv2[0]
        return scores, values

    def log_probs(self, index: CityIndex, scores: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """(T x N x max greens) log-probabilities, padding (and greens outside `allowed`) at -inf."""
        slots = torch.as_tensor(index.slots, device=scores.device)
        padded = scores[:, slots.clamp(min=0)]
        padded = padded.masked_fill((slots < 0)[None], float("-inf"))
        if allowed is not None:
            padded = padded.masked_fill(~allowed, float("-inf"))
        return torch.log_softmax(padded, dim=-1)

    def numpy_params(self) -> dict[str, NDArray[np.float64]]:
        return {name: getattr(self, name).detach().cpu().numpy().copy() for name in PARAM_NAMES}
