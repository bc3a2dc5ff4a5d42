"""Periodic evaluation on held-out data: implicit-reward accuracies and margins, and UPO's aux loss."""

from __future__ import annotations

import torch

from upo import losses
from upo.forward import eval_mode, step_inputs
from upo.methods import Method, needs_kto_reference_point, pair_metrics, unpaired_metrics
from upo.metrics import MetricsAverager


@torch.no_grad()
def evaluate(loader, policy, reference_fn, method: Method, cfg, accelerator, eval_format: str) -> dict[str, float]:
    """Mean metrics over the held-out batches, averaged over processes, keys prefixed `eval/`.

    Implicit rewards are beta * (policy - reference) log-probs. On held-out *pairs* this gives
    `rewards/accuracies` for every method, KTO and UPO included. The method's own loss is reported
    whenever it can be computed on the held-out batches; for KTO-based methods on held-out pairs
    (no mismatched sequences for the reference point) UPO's aux and value losses still are.
    """
    averager = MetricsAverager()
    with eval_mode(policy):
        for batch in loader:
            x = step_inputs(batch, policy, reference_fn, method, cfg, accelerator)
            metrics = {}
            if x.reference_logps is not None:
                rewards = cfg.beta * (x.policy_logps - x.reference_logps)
                if eval_format == "paired":
                    half = rewards.shape[0] // 2
                    metrics.update(pair_metrics(rewards[:half], rewards[half:], x.policy_logps[:half], x.policy_logps[half:]))
                else:
                    metrics.update(unpaired_metrics(rewards, x.policy_logps, x.desirable))
            # Unpaired losses run on paired batches too (chosen rows are the desirable ones); only
            # KTO's reference point needs the mismatched sequences that held-out pairs lack.
            if x.kto_reference_point is not None or not needs_kto_reference_point(method, cfg.pref_loss):
                _, method_metrics = method.loss(x, cfg)
                metrics.update({k: v for k, v in method_metrics.items() if k not in metrics})
            elif x.values is not None:  # UPO with a KTO term on held-out pairs: its aux terms alone
                aux_logps = x.policy_mean_logps if cfg.aux_logp == "mean" else x.policy_logps
                out = losses.upo_loss(x.policy_logps.new_zeros(1), aux_logps, x.rewards, x.values, aux_coef=cfg.aux_coef,
                                      eta=cfg.eta, max_weight=cfg.max_weight, tau=cfg.tau)
                metrics.update({"upo/aux_loss": out.aux_loss, "upo/value_loss": out.value_loss,
                                "upo/weight_mean": out.weights.mean()})
            averager.add(metrics, weight=len(batch["index"]))
    local = averager.pop()
    if not local:
        return {}
    keys = sorted(local)
    values = accelerator.reduce(torch.tensor([local[k] for k in keys], device=accelerator.device), reduction="mean")
    return {f"eval/{k}": float(v) for k, v in zip(keys, values.tolist(), strict=True)}
