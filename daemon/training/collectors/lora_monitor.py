"""LoRA monitor: per-layer gradient norm and update magnitude, and the layers that are dead, vanishing, exploding
or out of balance.

Gradients are read where they exist: a post-accumulate-grad hook on each LoRA parameter keeps the squared norm of
its accumulated gradient as backward finishes (before the Trainer clips it, so an exploding gradient is seen even
when clipping hides it from the optimizer), and `on_pre_optimizer_step` collects them; by `on_step_end` they are
zeroed. The update magnitude is the real change of a layer's LoRA weights across `optimizer.step()`: a copy is
taken in `on_pre_optimizer_step` and compared in `on_optimizer_step`.

A "layer" is one adapted module (e.g. `layers.0.self_attn.q_proj`): its lora_A and lora_B together. LoRA B starts
at zero, so A's gradient is zero at first; a layer is only called dead after `dead_after` steps with neither a
gradient nor an update.
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

    def __init__(self, every: int = 1, dead_after: int = 10):
        self.every = every
        """Measure every N optimizer steps (1 = each step)."""
        self.dead_after = dead_after
        self.layers: dict[str, list[tuple[str, Any]]] = {}
        self.grad_norm: dict[str, float] = {}
        self.update: dict[str, float] = {}
        self.weight_norm: dict[str, float] = {}
        self._silent_steps: dict[str, int] = defaultdict(int)  # consecutive measured steps with no grad, no update
        self._before: dict[str, Any] = {}
        self._sq: dict[str, Any] = {}  # parameter name -> squared norm of its latest accumulated gradient
        self._hooks: list[Any] = []
        self._measuring = False
        self.steps = 0
        self._step = 0

    def on_train_begin(self, args, state, control, model=None, **kw):
        if model is None:
            return
        layers: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for name, p in model.named_parameters():
            layer = layer_of(name)
            if layer is not None:
                # Frozen LoRA parameters are watched too: a layer frozen by mistake is exactly a dead layer.
                layers[layer].append((name, p))
                if p.requires_grad and not self._hooks_on(name):
                    self._hooks.append(p.register_post_accumulate_grad_hook(self._grad_hook(name)))
        self.layers = dict(layers)

    def _hooks_on(self, name: str) -> bool:
        return name in self._sq

    def _grad_hook(self, name: str):
        self._sq[name] = None

        def hook(p):
            if self._measuring_next:
                self._sq[name] = p.grad.detach().float().pow(2).sum()
        return hook

    @property
    def _measuring_next(self) -> bool:
        return self._step % self.every == 0

    def on_step_begin(self, args, state, control, **kw):
        self._step = state.global_step

    def on_train_end(self, args, state, control, **kw):
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._sq.clear()

    def on_pre_optimizer_step(self, args, state, control, **kw):
        self._measuring = bool(self.layers) and (state.global_step % self.every == 0)
        if not self._measuring:
            return
        import torch

        with torch.no_grad():
            norms = []
            for params in self.layers.values():
                sq = [self._sq[name] for name, _ in params if self._sq.get(name) is not None]
                norms.append(torch.stack(sq).sum().sqrt() if sq else torch.zeros((), device=params[0][1].device))
            for name in self._sq:
                self._sq[name] = None
            values = torch.stack([n.to(norms[0].device) for n in norms]).cpu().tolist()
            self.grad_norm = dict(zip(self.layers, values))
            self._before = {layer: [p.detach().clone() for _, p in params] for layer, params in self.layers.items()}

    def on_optimizer_step(self, args, state, control, **kw):
        if not self._measuring:
            return
        import torch

        with torch.no_grad():
            deltas, weights = [], []
            for layer, params in self.layers.items():
                before = self._before[layer]
                deltas.append(torch.stack([(p.detach().float() - b.float()).pow(2).sum()
                                           for (_, p), b in zip(params, before)]).sum().sqrt())
                weights.append(torch.stack([p.detach().float().pow(2).sum() for _, p in params]).sum().sqrt())
            d = torch.stack([x.to(deltas[0].device) for x in deltas]).cpu().tolist()
            w = torch.stack([x.to(weights[0].device) for x in weights]).cpu().tolist()
        self._before = {}
        self.update = dict(zip(self.layers, d))
        self.weight_norm = dict(zip(self.layers, w))
        self.steps += 1
        for layer in self.layers:
            silent = self.grad_norm.get(layer, 0.0) == 0.0 and self.update[layer] == 0.0
            self._silent_steps[layer] = self._silent_steps[layer] + 1 if silent else 0

    # -- verdicts ------------------------------------------------------------------------------------------------
    def dead(self) -> list[str]:
        return [layer for layer, n in self._silent_steps.items() if n >= self.dead_after]

    def vanishing(self) -> list[str]:
        if self.steps < self.dead_after:
            return []
        dead = set(self.dead())
        return [layer for layer, g in self.grad_norm.items() if g < VANISHING and layer not in dead]

    def exploding(self) -> list[str]:
        return [layer for layer, g in self.grad_norm.items() if g > EXPLODING]

    def imbalance(self) -> float | None:
        """Largest over smallest gradient norm among live layers."""
        dead = set(self.dead())
        live = [g for layer, g in self.grad_norm.items() if layer not in dead and g > 0]
        if len(live) < 2 or self.steps < self.dead_after:
            return None
        return max(live) / min(live)

    def update_ratio(self) -> float | None:
        """Mean update magnitude relative to the weights' norm (how far one step moves the adapter)."""
        ratios = [self.update[k] / w for k, w in self.weight_norm.items() if w > 0 and k in self.update]
        return sum(ratios) / len(ratios) if ratios else None

    def summary(self) -> dict[str, Any]:
        if not self.grad_norm:
            return {}
        g = list(self.grad_norm.values())
        imb = self.imbalance()
        ratio = self.update_ratio()
        return {
            "lora_stats": {layer: {"grad_norm": _r(self.grad_norm[layer]), "update": _r(self.update.get(layer))}
                           for layer in self.layers},
            "lora_summary": {
                "layers": len(self.layers), "grad_norm_mean": _r(sum(g) / len(g)), "grad_norm_max": _r(max(g)),
                "grad_norm_min": _r(min(g)), "update_ratio": _r(ratio), "dead": self.dead(),
                "vanishing": self.vanishing(), "exploding": self.exploding(),
                "imbalance": _r(imb), "imbalanced": bool(imb and imb > IMBALANCE)},
        }


def _r(v: float | None) -> float | None:
    return None if v is None else float(f"{v:.4g}")
