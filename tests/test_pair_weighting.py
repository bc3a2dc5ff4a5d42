"""LD-DPO's token weights (`ld_alpha`) and WPO's pair weights (`wpo_weighting`): hand-worked, in
`sequence_logps` against the full logits, and in training (TRL's own losses: tests/test_against_trl.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import build_tiny_model, run_config
from test_logps import _batch

from upo.config import ConfigError
from upo.logps import sequence_logps
from upo.metrics import read_metrics
from upo.pair_weighting import ld_token_weights, wpo_aligned_logps, wpo_pair_weights
from upo.trainer import train


def test_ld_token_weights_hand_worked():
    """Pair 0: chosen 3 tokens, rejected 1 -> shared 1; pair 1: 2 and 2 -> shared 2. Prompt positions are 0."""
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [0, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    expected = torch.tensor([[0, 1, 0.25, 0.25], [0, 0, 1, 1], [0, 1, 0, 0], [0, 0, 1, 1]])
    torch.testing.assert_close(ld_token_weights(mask, 0.25), expected)
    torch.testing.assert_close(ld_token_weights(mask, 1.0), mask.float())


def test_wpo_weights_hand_worked():
    """Two tokens of a 2-word vocabulary with logits (0, 0): p = 1/2, sum p^2 = 1/2, aligned = log(1/2) - log(1/2) = 0;
    with logits (log 3, 0): p(0) = 3/4, sum p^2 = 10/16, aligned = log(3/4) - log(10/16) = log(6/5)."""
    log_probs = torch.log_softmax(torch.tensor([[0.0, 0.0], [math.log(3), 0.0]]), -1)
    logps = log_probs[torch.arange(2), torch.tensor([1, 0])]
    torch.testing.assert_close(wpo_aligned_logps(log_probs, logps), torch.tensor([0.0, math.log(6 / 5)]))
    # pairs: (chosen mean 0, rejected mean log 2), (log 3, -log 2) -> weights 1 * 2, 3 * 1/2
    means = torch.tensor([0.0, math.log(3), math.log(2), -math.log(2)])
    torch.testing.assert_close(wpo_pair_weights(means), torch.tensor([2.0, 1.5]))


def _token_logps_and_aligned(model, batch):
    """The textbook per-token log-probs [N, T-1] and WPO's aligned log-probs, from the full logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1)
    token = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return token, token - torch.log((logp.exp() ** 2).sum(-1))


@pytest.mark.parametrize(("padding_free", "chunk"), [(True, None), (True, 3), (False, None)])
def test_sequence_logps_weighs_the_tail_and_gives_wpo_means(padding_free, chunk):
    """Packed with a shared prompt, in LM-head chunks of 3 (the last one short), and padded: the sums count each
    token past the pair's shared length ld_alpha times, the per-token means every token once (TRL's NLL); wpo_mean
    is the mean aligned log-prob."""
    model = build_tiny_model(64).eval()
    batch = _batch()  # pair 0: chosen 5 tokens, rejected 2; pair 1: 2 and 4
    mask = batch["loss_mask"]
    token, aligned = _token_logps_and_aligned(model, batch)
    weights = ld_token_weights(mask, 0.5)[:, 1:]
    assert (weights == 0.5).sum() == 3 + 2
    out = sequence_logps(model, batch["input_ids"], batch["attention_mask"], mask, padding_free=padding_free,
                         shared_prompt=True, logits_chunk_tokens=chunk, ld_alpha=0.5, wpo=True)
    torch.testing.assert_close(out.sum, (token * weights).sum(1), rtol=1e-5, atol=1e-5)
    count = mask[:, 1:].sum(1)
    torch.testing.assert_close(out.mean, (token * mask[:, 1:]).sum(1) / count, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.wpo_mean, (aligned * mask[:, 1:]).sum(1) / count, rtol=1e-5, atol=1e-5)
    assert not out.wpo_mean.requires_grad
    plain = sequence_logps(model, batch["input_ids"], batch["attention_mask"], mask, padding_free=padding_free)
    assert plain.wpo_mean is None and not torch.allclose(plain.sum, out.sum)


def test_wpo_weights_carry_no_gradient_through_chunks():
    """Checkpointed LM-head chunks with WPO on: the gradient of the sums (plus wpo_mean, which has none) is the
    plain run's."""
    model = build_tiny_model(64).train()
    batch = _batch()
    grads = []
    for wpo in (False, True):
        model.zero_grad()
        out = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                             logits_chunk_tokens=3, wpo=wpo)
        (out.sum.sum() + (out.wpo_mean.sum() if wpo else 0)).backward()  # wpo_mean must carry no gradient
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_an_ld_dpo_run_starts_at_zero_log_ratios_and_a_wpo_run_logs_its_weights(tiny_model_dir, pairs_file, tmp_path):
    """The reference log-probs are weighted as the policy's (precomputed, and by a frozen copy): before the first
    update every log-ratio is 0. A WPO run's steps log wpo/weights in (0, inf)."""
    logps = {}
    for alpha, precompute in ((0.0, True), (0.0, False), (None, True)):
        out = tmp_path / f"ld-{alpha}-{precompute}"
        final = train(run_config(tiny_model_dir, pairs_file, out, method="dpo", ld_alpha=alpha, max_steps=1,
                                 precompute_ref_logps=precompute))
        first = read_metrics(final.parent / "metrics.jsonl")[0]
        assert first["train/rewards/chosen"] == 0.0 and first["train/rewards/rejected"] == 0.0
        logps[alpha] = first["train/logps/chosen"], first["train/logps/rejected"]
    assert logps[0.0] != logps[None]  # the policy's sums are weighted (some pair's responses differ in length)
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path / "wpo", method="dpo", wpo_weighting=True,
                             ld_alpha=0.5))
    rows = read_metrics(final.parent / "metrics.jsonl")
    assert rows[0]["train/rewards/chosen"] == 0.0 and rows[0]["train/rewards/margins"] == 0.0
    assert all(0 < row["train/wpo/weights"] < math.inf for row in rows)


def test_ld_dpo_reference_log_probs_are_cached_apart(tiny_model_dir, pairs_file, tmp_path):
    """Runs that differ only in ld_alpha do not share cached reference log-probs; the same ld_alpha does."""
    cache = tmp_path / "cache"
    tables = []
    for name, alpha in [("a", 0.5), ("b", 0.2), ("c", 0.5)]:
        train(run_config(tiny_model_dir, pairs_file, tmp_path / name, method="dpo", ld_alpha=alpha, max_steps=1,
                         cache_dir=str(cache)))
        tables.append(sorted(p.name for p in (cache / "reference_logps").iterdir()))
    assert len(tables[0]) == 1 and len(tables[1]) == 2 and tables[2] == tables[1]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (dict(method="kto", ld_alpha=0.5), r"ld_alpha \(method 'kto' has no log-ratios of pairs"),
        (dict(method="simpo", ld_alpha=0.5), r"ld_alpha \(method 'simpo' has no log-ratios of pairs"),
        (dict(method="upo", pref_loss="kto", ld_alpha=0.5), "ld_alpha"),
        (dict(method="dpo", ld_alpha=1.5), r"ld_alpha must be in \[0, 1\]"),
        (dict(method="aot", wpo_weighting=True), r"wpo_weighting \(method 'aot' has no per-pair loss"),
        (dict(method="upo", pref_loss="dpo", wpo_weighting=True), "wpo_weighting"),
        (dict(method="mix", loss_mix={"dpo": 1.0, "aot": 1.0}, wpo_weighting=True), "wpo_weighting"),
        (dict(method="mix", loss_mix={"dpo": 1.0, "cpo": 1.0}, ld_alpha=0.5), r"ld_alpha \(LD-DPO's weights would reach"),
        (dict(method="upo", pref_loss="dpo", aux_logp="sum", ld_alpha=0.5), r"ld_alpha \(LD-DPO's weights would reach"),
    ],
)
def test_weighting_settings_are_checked(tiny_model_dir, pairs_file, tmp_path, keys, message):
    with pytest.raises(ConfigError, match=message):
        run_config(tiny_model_dir, pairs_file, tmp_path, **keys)


@pytest.mark.parametrize("method", ["dpo", "sft", "mix"])
def test_the_method_table_scales_each_pairs_loss_by_its_weight(method):
    """Pair losses l_i with weights w_i: the batch loss is mean(w_i * l_i) (a mix: each term's)."""
    from upo.config import UPOConfig
    from upo.forward import StepInputs
    from upo.methods import METHODS

    g = torch.Generator().manual_seed(0)
    logps, lengths = -20 * torch.rand(8, generator=g), torch.full((8,), 5.0)
    weights = torch.tensor([0.5, 2.0, 1.0, 0.1])
    cfg = UPOConfig(method=method, wpo_weighting=True, **({"loss_mix": {"dpo": 0.5, "sft": 1.0}} if method == "mix" else {}))

    def loss(pair_weights):
        x = StepInputs(policy_logps=logps, policy_mean_logps=logps / lengths, reference_logps=logps + torch.randn(8, generator=g),
                       desirable=torch.arange(8) < 4, rewards=torch.zeros(8), num_tokens=lengths, pair_weights=pair_weights)
        return METHODS[method].loss(x, cfg)[0]

    g.manual_seed(1)
    plain = loss(None)
    g.manual_seed(1)
    weighted = loss(weights)
    if method == "sft":  # per pair: the chosen response's per-token NLL
        torch.testing.assert_close(weighted, (weights * -(logps[:4] / 5)).mean())
    if method == "dpo":  # pair i's DPO loss times w_i
        from upo.losses import dpo_loss

        g.manual_seed(1)
        reference = logps + torch.randn(8, generator=g)
        per_pair = dpo_loss(logps[:4], logps[4:], reference[:4], reference[4:], beta=cfg.beta)[0]
        torch.testing.assert_close(weighted, (weights * per_pair).mean())
    assert not torch.allclose(plain, weighted)
    g.manual_seed(1)
    torch.testing.assert_close(loss(torch.ones(4)), plain)


def test_unpaired_held_out_data_is_refused_with_pair_weights(tiny_model_dir, pairs_file, tmp_path):
    """A paired method with unpaired held-out rows: the forward would pair unrelated rows (or fail on an odd count)."""
    import json

    unpaired = tmp_path / "unpaired.jsonl"
    unpaired.write_text("".join(json.dumps({"prompt": f"Say {w}.", "completion": w, "label": True}) + "\n"
                                for w in ("yes", "no", "maybe")))
    for keys in (dict(ld_alpha=0.5), dict(wpo_weighting=True)):
        cfg = run_config(tiny_model_dir, pairs_file, tmp_path, method="dpo", eval_dataset=str(unpaired), **keys)
        with pytest.raises(ValueError, match=f"{next(iter(keys))} weigh pairs, and the held-out data of .* are unpaired"):
            train(cfg)


def test_a_sweep_drops_the_bases_weighting_keys_where_a_point_cannot_take_them():
    from upo.frontier.sweep import config_keys

    base = {"ld_alpha": 0.5, "wpo_weighting": True, "rewards": {"length": 1.0}}
    assert config_keys(base, {"method": "dpo"}) == {**base, "method": "dpo"}
    assert "ld_alpha" not in config_keys(base, {"method": "kto"}) and "wpo_weighting" not in config_keys(base, {"method": "kto"})
    upo = config_keys(base, {"method": "upo", "pref_loss": "dpo"})
    assert upo["ld_alpha"] == 0.5 and "wpo_weighting" not in upo
    assert "ld_alpha" in config_keys(base, {"method": "kto", "ld_alpha": 0.5})  # the point's own: still an error
