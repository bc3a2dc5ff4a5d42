"""Held-out metrics during training: implicit-reward accuracies and margins, and the method's own
metrics on the held-out batches (`eval/...` in metrics.jsonl). `upo eval` is `upo.evaluation`."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from upo.forward import step_inputs
from upo.methods import Method, needs_kto_reference_point
from upo.metrics import MetricsAverager, reduce_metrics
from upo.modeling import eval_mode
from upo.steps import pair_metrics, split_pairs, unpaired_metrics


@torch.no_grad()
def heldout_metrics(loader, policy, reference_fn, method: Method, cfg, accelerator, eval_format: str,
                    progress: bool = False) -> dict[str, float]:
    """Mean metrics over the held-out batches, averaged over processes, keys prefixed `eval/`.

    Implicit rewards are beta * (policy - reference) log-probs. On held-out *pairs* this gives
    `rewards/accuracies` for every method, KTO and UPO included. The method's own loss is reported
    whenever it can be computed on the held-out batches; for KTO-based methods on held-out pairs
    (no mismatched sequences for the reference point) the table's `partial_eval` metrics are (UPO:
    its aux and value losses). `progress`: a tqdm bar over the batches.
    """
    averager = MetricsAverager()
    with eval_mode(policy):
        for batch in tqdm(loader, desc="held-out eval", disable=not progress, leave=False):
            x = step_inputs(batch, policy, reference_fn, method, cfg, accelerator)
            metrics = {}
            if x.reference_logps is not None:
                rewards = cfg.beta * (x.policy_logps - x.reference_logps)
                if eval_format == "paired":
                    metrics.update(pair_metrics(*split_pairs(rewards), *split_pairs(x.policy_logps)))
                else:
                    metrics.update(unpaired_metrics(rewards, x.policy_logps, x.desirable))
            # Unpaired losses run on paired batches too (chosen rows are the desirable ones); only
            # KTO's reference point needs the mismatched sequences that held-out pairs lack.
            if x.kto_reference_point is not None or not needs_kto_reference_point(method, cfg.pref_loss):
                _, method_metrics = method.loss(x, cfg)
                metrics.update({k: v for k, v in method_metrics.items() if k not in metrics})
            elif method.partial_eval is not None:  # e.g. UPO with a KTO term on held-out pairs: its aux terms
                metrics.update(method.partial_eval(x, cfg))
            averager.add(metrics, weight=len(batch["index"]))
    return reduce_metrics(accelerator, averager.pop(), prefix="eval/")
