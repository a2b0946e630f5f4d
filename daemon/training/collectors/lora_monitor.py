"""LoRA monitor: per-layer gradient norm and update magnitude, and the layers that are dead,
vanishing, exploding or out of balance.

Gradients are read where they still exist: `on_pre_optimizer_step`, after backward and before
`optimizer.step()` and `zero_grad()` (by `on_step_end` they are gone). The Trainer clips them just
before; clipping scales every gradient by the same factor, so the norms are scaled back up by the
clip factor of the last logged step (`grad_norm` / `max_grad_norm`), and an exploding gradient is
seen even when clipping hides it from the optimizer. The update magnitude is the real change of a
layer's LoRA weights across `optimizer.step()`: a copy is taken in `on_pre_optimizer_step` and
compared in `on_optimizer_step`. All of it is a few fused `torch._foreach_*` calls and one host
sync per measured step.

A "layer" is one adapted module (e.g. `layers.0.self_attn.q_proj`): its lora_A and lora_B together.
LoRA B starts at zero, so A's gradient is zero at first; a layer is only called dead after
`dead_after` steps with neither a gradient nor an update.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from daemon.training.collectors import Collector

VANISHING = 1e-5
EXPLODING = 100.0
IMBALANCE = 1000.0
_LORA = re.compile(r"^(?:base_model\.model\.)?(.*)\.lora_[AB]\.[^.]+\.weight$")


def layer_of(param_name: str) -> str | None:
    m = _LORA.match(param_name)
    return m.group(1) if m else None


class LoRAMonitor(Collector):
    name = "lora"

    def __init__(
        self,
        every: int = 5,
        dead_after: int = 10,
        exploding: float = EXPLODING,
        vanishing: float = VANISHING,
        imbalance: float = IMBALANCE,
    ):
        self.every = every
        """Measure every N optimizer steps (1 = each step). `dead_after` counts measured steps."""
        self.dead_after = dead_after
        self.exploding_norm, self.vanishing_norm, self.imbalance_ratio = (
            exploding,
            vanishing,
            imbalance,
        )
        """The verdicts' thresholds (`[alerts]`): the status's lora_summary and the alerts read the
        same ones."""
        self.layers: dict[str, list[tuple[str, Any]]] = {}
        self.grad_norm: dict[str, float] = {}
        self.update: dict[str, float] = {}
        self.weight_norm: dict[str, float] = {}
        # consecutive measured steps with no grad, no update
        self._silent_steps: dict[str, int] = defaultdict(int)
        self._params: list[Any] = []
        self._weights: list[Any] = []
        self._layer_index: Any = None  # parameter i belongs to layer _layer_index[i]
        self._before: list[Any] = []
        self._grad_vec: Any = None
        self._max_grad_norm = 0.0
        self._clip_scale = 1.0
        self._measuring = False
        # (self.steps when built, the summary)
        self._summary: tuple[int, dict[str, Any]] | None = None
        self.steps = 0

    def about(self) -> str:
        return f"every {self.every} steps"

    def on_train_begin(self, args, state, control, model=None, **kw):
        if model is None:
            return
        import torch

        layers: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for name, p in model.named_parameters():
            layer = layer_of(name)
            if layer is not None:
                # Frozen LoRA parameters are watched too: a layer frozen by mistake is exactly a
                # dead layer.
                layers[layer].append((name, p))
        self.layers = dict(layers)
        self._params = [p for params in self.layers.values() for _, p in params]
        # views: they follow the optimizer's in-place updates
        self._weights = [p.detach() for p in self._params]
        if self._params:
            device = self._params[0].device
            self._layer_index = torch.tensor(
                [i for i, params in enumerate(self.layers.values()) for _ in params], device=device
            )
        self._max_grad_norm = float(getattr(args, "max_grad_norm", 0) or 0)

    def on_log(self, args, state, control, logs=None, **kw):
        g = (logs or {}).get("grad_norm")
        if isinstance(g, (int, float)) and self._max_grad_norm > 0:
            self._clip_scale = max(1.0, float(g) / self._max_grad_norm)

    def _per_layer(self, norms: list[Any]) -> Any:
        """Per-parameter norms (tensors) -> per-layer norms, shape (layers,)."""
        import torch

        sq = torch.stack(norms).float().pow(2)
        return (
            torch.zeros(len(self.layers), device=sq.device)
            .index_add_(0, self._layer_index, sq)
            .sqrt()
        )

    def on_pre_optimizer_step(self, args, state, control, **kw):
        self._measuring = bool(self.layers) and (state.global_step % self.every == 0)
        if not self._measuring:
            return
        import torch

        with torch.no_grad():
            grads = [
                p.grad if p.grad is not None else torch.zeros((), device=p.device)
                for p in self._params
            ]
            self._grad_vec = self._per_layer(torch._foreach_norm(grads)) * self._clip_scale
            self._before = torch._foreach_mul(self._weights, 1.0)

    def on_optimizer_step(self, args, state, control, **kw):
        if not self._measuring:
            return
        import torch

        with torch.no_grad():
            now = self._weights
            deltas = self._per_layer(torch._foreach_norm(torch._foreach_sub(now, self._before)))
            weights = self._per_layer(torch._foreach_norm(now))
            g, d, w = torch.stack([self._grad_vec, deltas, weights]).cpu().tolist()
        self._before = []
        names = list(self.layers)
        self.grad_norm = dict(zip(names, g))
        self.update = dict(zip(names, d))
        self.weight_norm = dict(zip(names, w))
        self.steps += 1
        for layer in names:
            silent = self.grad_norm[layer] == 0.0 and self.update[layer] == 0.0
            self._silent_steps[layer] = self._silent_steps[layer] + 1 if silent else 0

    # -- verdicts
    # ---------------------------------------------------------------------------------------------
    def dead(self) -> list[str]:
        return [layer for layer, n in self._silent_steps.items() if n >= self.dead_after]

    def vanishing(self) -> list[str]:
        if self.steps < self.dead_after:
            return []
        dead = set(self.dead())
        return [
            layer
            for layer, g in self.grad_norm.items()
            if g < self.vanishing_norm and layer not in dead
        ]

    def exploding(self) -> list[str]:
        """Layers whose gradient norm is above the threshold, largest first."""
        found = [layer for layer, g in self.grad_norm.items() if g > self.exploding_norm]
        return sorted(found, key=lambda layer: -self.grad_norm[layer])

    def imbalance(self) -> float | None:
        """Largest over smallest gradient norm among live layers."""
        dead = set(self.dead())
        live = [g for layer, g in self.grad_norm.items() if layer not in dead and g > 0]
        if len(live) < 2 or self.steps < self.dead_after:
            return None
        return max(live) / min(live)

    def active_layers(self) -> int:
        """Layers that learned at the last measurement: a gradient or an update that is not
        zero."""
        return sum(
            1
            for layer in self.layers
            if self.grad_norm.get(layer, 0.0) > 0 or self.update.get(layer, 0.0) > 0
        )

    def update_ratio(self) -> float | None:
        """Mean update magnitude relative to the weights' norm (how far one step moves the
        adapter)."""
        ratios = [
            self.update[k] / w for k, w in self.weight_norm.items() if w > 0 and k in self.update
        ]
        return sum(ratios) / len(ratios) if ratios else None

    def summary(self) -> dict[str, Any]:
        # Read every logged step but new only every `every` steps: built once per measurement.
        if self._summary is None or self._summary[0] != self.steps:
            self._summary = (self.steps, self._build_summary())
        return self._summary[1]

    def _build_summary(self) -> dict[str, Any]:
        if not self.grad_norm:
            return {}
        g = list(self.grad_norm.values())
        imb = self.imbalance()
        ratio = self.update_ratio()
        return {
            "lora_stats": {
                layer: {
                    "grad_norm": _r(self.grad_norm[layer]),
                    "update": _r(self.update.get(layer)),
                }
                for layer in self.layers
            },
            "lora_summary": {
                "layers": len(self.layers),
                "active_layers": self.active_layers(),
                "grad_norm_mean": _r(sum(g) / len(g)),
                "grad_norm_max": _r(max(g)),
                "grad_norm_min": _r(min(g)),
                "update_ratio": _r(ratio),
                "dead": self.dead(),
                "vanishing": self.vanishing(),
                "exploding": self.exploding(),
                "imbalance": _r(imb),
                "imbalanced": bool(imb and imb > self.imbalance_ratio),
            },
        }


def _r(v: float | None) -> float | None:
    return None if v is None else float(f"{v:.4g}")
