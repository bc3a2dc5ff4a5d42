"""upo's losses against TRL's own, on random log-probs: the reference-free ones (TRL 1.16's experimental
CPOTrainer.cpo_loss with loss_type sigmoid and simpo, ORPOTrainer.odds_ratio_loss), and DPO's relatives
(upo.pair_losses) against DPOTrainer's loss of the same loss_type, with a stand-in model whose
log-probs are given.

TRL is not a dependency of upo: these tests skip without it. They run in the benchmark
environment: `make bench-env && .venv-bench/bin/python -m pytest tests/test_against_trl.py`.
TRL's methods are called unbound, with a stand-in for the trainer holding the attributes they read.
The NLL terms are not compared: TRL averages over the batch's chosen tokens, upo per response
(README, "The losses").
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from upo import pair_losses as pl
from upo.losses import dpo_loss
from upo.reference_free_losses import alphapo_reward, cpo_loss, orpo_loss, simpo_loss

cpo_trainer = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
orpo_trainer = pytest.importorskip("trl.experimental.orpo.orpo_trainer")


def trainer(**attrs) -> SimpleNamespace:
    return SimpleNamespace(accelerator=SimpleNamespace(device=torch.device("cpu")), alpha=0.0, **attrs)


def mean_logps(n: int, seed: int) -> torch.Tensor:
    """[n] per-token mean log-probs in (-6, -1e-4): probabilities from near 0 to near 1."""
    g = torch.Generator().manual_seed(seed)
    return -torch.exp(torch.empty(n).uniform_(-9.0, 1.8, generator=g))


@pytest.mark.parametrize(("beta", "gamma", "label_smoothing", "alpha"),
                         [(2.0, 1.0, 0.0, 0.0), (2.5, 0.3, 0.1, 0.0), (0.1, 0.5, 0.0, 0.0), (2.0, 0.5, 0.0, 0.25),
                          (2.0, 0.5, 0.1, -0.5)])
def test_simpo_is_trls(beta, gamma, label_smoothing, alpha):
    """With alpha != 0: AlphaPO (upo's alphapo_alpha, TRL's CPOConfig.alpha)."""
    mc, mr = mean_logps(64, 1), mean_logps(64, 2)
    ours, chosen, rejected = simpo_loss(alphapo_reward(mc, alpha), alphapo_reward(mr, alpha), beta=beta, gamma=gamma,
                                        label_smoothing=label_smoothing)
    trl = trainer(loss_type="simpo", beta=beta, simpo_gamma=gamma, label_smoothing=label_smoothing)
    trl.alpha = alpha
    theirs, their_chosen, their_rejected = cpo_trainer.CPOTrainer.cpo_loss(trl, mc, mr)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(chosen, their_chosen)
    torch.testing.assert_close(rejected, their_rejected)


@pytest.mark.parametrize(("beta", "label_smoothing", "alpha"), [(0.1, 0.0, 0.0), (0.5, 0.2, 0.0), (0.1, 0.0, -0.3)])
def test_cpo_preference_term_is_trls(beta, label_smoothing, alpha):
    """With alpha < 0: AlphaPO on CPO's summed log-probs (alpha > 0 is refused: it overflows)."""
    pc, pr = 40 * mean_logps(64, 3), 40 * mean_logps(64, 4)  # summed log-probs of ~40 tokens
    ours, chosen, rejected, _ = cpo_loss(alphapo_reward(pc, alpha), alphapo_reward(pr, alpha), torch.zeros(64), beta=beta,
                                         alpha=0.0, label_smoothing=label_smoothing)
    trl = trainer(loss_type="sigmoid", beta=beta, simpo_gamma=0.5, label_smoothing=label_smoothing)
    trl.alpha = alpha
    theirs, their_chosen, their_rejected = cpo_trainer.CPOTrainer.cpo_loss(trl, pc, pr)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(chosen, their_chosen)
    torch.testing.assert_close(rejected, their_rejected)


@pytest.mark.parametrize("alpha", [0.0, -0.3, 0.25])
@pytest.mark.parametrize("loss_type", ["hinge", "ipo"])
def test_cpo_hinge_and_ipo_are_trls(loss_type, alpha):
    """CPOTrainer's hinge (summed log-probs) and ipo (per-token means: TRL's average_log_prob), as upo's cpo step
    with cpo_loss_type; AlphaPO > 0 on ipo's means only."""
    from upo.config import UPOConfig
    from upo.forward import StepInputs
    from upo.methods import METHODS

    if alpha > 0 and loss_type == "hinge":
        pytest.skip("alphapo_alpha > 0 is refused on summed log-probs")
    lengths = torch.randint(5, 60, (128,), generator=torch.Generator().manual_seed(8)).float()
    means = torch.cat([mean_logps(64, 5), mean_logps(64, 6)]) / 4  # (-1.5, 0): sums of a few to ~90 nats
    sums = means * lengths
    trl = trainer(loss_type=loss_type, beta=0.5, simpo_gamma=0.5, label_smoothing=0.0)
    trl.alpha = alpha
    compared = means if loss_type == "ipo" else sums
    theirs, their_chosen, their_rejected = cpo_trainer.CPOTrainer.cpo_loss(trl, *compared.chunk(2))
    x = StepInputs(policy_logps=sums, policy_mean_logps=means, reference_logps=None, desirable=torch.arange(128) < 64,
                   rewards=torch.zeros(128), num_tokens=lengths)
    cfg = UPOConfig(method="cpo", beta=0.5, cpo_alpha=0.0, cpo_loss_type=loss_type, alphapo_alpha=alpha)
    ours, metrics = METHODS["cpo"].loss(x, cfg)
    torch.testing.assert_close(ours, theirs.mean())
    torch.testing.assert_close(metrics["rewards/chosen"], their_chosen.mean())
    torch.testing.assert_close(metrics["rewards/rejected"], their_rejected.mean())


@pytest.mark.parametrize("beta", [0.1, 0.25])
def test_orpo_odds_ratio_term_is_trls(beta):
    """TRL returns beta * log sigmoid(log odds ratio), which its loss subtracts from the NLL."""
    mc, mr = mean_logps(64, 5), mean_logps(64, 6)
    ours = orpo_loss(mc, mr, beta=beta)
    theirs, chosen, rejected, _, log_odds_ratio_mean = orpo_trainer.ORPOTrainer.odds_ratio_loss(trainer(beta=beta), mc, mr)
    torch.testing.assert_close(beta * ours.odds_ratio_losses, -theirs)
    torch.testing.assert_close(ours.losses - ours.nll, -theirs)
    torch.testing.assert_close(ours.log_odds_ratios.mean(), log_odds_ratio_mean)
    torch.testing.assert_close(ours.chosen_rewards, chosen)
    torch.testing.assert_close(ours.rejected_rewards, rejected)


# ---- DPO's relatives against DPOTrainer._compute_loss -----------------------------------------------


def trl_dpo_loss(loss_type: str | list[str], per_token_logps: torch.Tensor, completion_mask: torch.Tensor,
                 ref_logps: torch.Tensor, *, beta: float, label_smoothing: float = 0.0,
                 discopop_tau: float = 0.05, loss_weights: list[float] | None = None,
                 f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5,
                 ld_alpha: float | None = None, log_sum_sq_probs: torch.Tensor | None = None) -> torch.Tensor:
    """TRL 1.16's DPO loss (the batch mean) of `loss_type`, on a batch [chosen; rejected] whose
    policy gives `per_token_logps` [2B, T] at the tokens `completion_mask` [2B, T + 1] marks (TRL's
    shifted mask), and precomputed reference log-probs `ref_logps` [2B]; with `ld_alpha`, LD-DPO's;
    with `log_sum_sq_probs` [2B, T] (log sum_v p_v^2 at each position), WPO's weighting (use_weighting)."""
    from collections import defaultdict

    dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer")
    types = [loss_type] if isinstance(loss_type, str) else loss_type
    n, length = per_token_logps.shape
    zeros = torch.zeros(n, length)
    outputs = SimpleNamespace(log_probs=per_token_logps * completion_mask[:, 1:], entropy=zeros, mean_logits=zeros,
                              is_top1=zeros.bool(), log_sum_sq_probs=log_sum_sq_probs)
    stand_in = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=SimpleNamespace(
            device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x),
        aux_loss_enabled=False, ld_alpha=ld_alpha, precompute_ref_logps=True, f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=f_alpha_divergence_coef,
        loss_types=types, loss_weights=loss_weights or [1.0] * len(types), beta=beta, label_smoothing=label_smoothing,
        args=SimpleNamespace(discopop_tau=discopop_tau), use_weighting=log_sum_sq_probs is not None, _metrics={"train": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1)
    ref_chosen, ref_rejected = ref_logps.chunk(2)
    inputs = {"input_ids": torch.zeros(n, length + 1, dtype=torch.long), "attention_mask": torch.ones(n, length + 1),
              "completion_mask": completion_mask, "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
    return dpo_trainer.DPOTrainer._compute_loss(stand_in, lambda **kwargs: outputs, inputs, return_outputs=False)


PAIR_LOSSES = {  # TRL's loss_type -> upo's pure loss and its keyword arguments
    "sigmoid": (dpo_loss, {}), "hinge": (pl.hinge_loss, {}), "robust": (pl.robust_dpo_loss, {"label_smoothing": 0.2}),
    "nca_pair": (pl.nca_pair_loss, {}), "bco_pair": (pl.bco_pair_loss, {}), "sppo_hard": (pl.sppo_hard_loss, {}),
    "apo_zero": (pl.apo_zero_loss, {}), "apo_down": (pl.apo_down_loss, {}),
    "exo_pair": (pl.exo_pair_loss, {"exo_epsilon": 1e-3}), "discopop": (pl.discopop_loss, {"discopop_tau": 0.05}),
    "aot": (pl.aot_loss, {"label_smoothing": 0.1}), "aot_unpaired": (pl.aot_unpaired_loss, {"label_smoothing": 0.0}),
    "sigmoid_norm": (pl.sigmoid_norm_loss, {}),  # takes the lengths too (below)
}


@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("loss_type", sorted(PAIR_LOSSES))
def test_dpo_relatives_are_trls(loss_type, beta):
    """32 pairs of responses 1-12 tokens long, per-token log-probs in (-6, 0); the reference's summed
    log-probs within a few nats of the policy's."""
    g = torch.Generator().manual_seed(7)
    lengths = torch.randint(1, 13, (64,), generator=g)
    mask = torch.zeros(64, 13)
    for row, n in enumerate(lengths.tolist()):
        mask[row, 1:1 + n] = 1  # position 0 is the prompt's
    per_token = -6.0 * torch.rand(64, 12, generator=g)
    logps = (per_token * mask[:, 1:]).sum(1)  # [64]
    ref = logps + 3.0 * torch.randn(64, generator=g)
    loss, kwargs = PAIR_LOSSES[loss_type]
    trl_kwargs = {"exo_epsilon": "label_smoothing"}
    theirs = trl_dpo_loss(loss_type, per_token, mask, ref, beta=beta,
                          **{trl_kwargs.get(k, k): v for k, v in kwargs.items()})
    lengths = (lengths.chunk(2),) if loss_type == "sigmoid_norm" else ()
    ours = loss(*logps.chunk(2), *ref.chunk(2), *(t for pair in lengths for t in pair), beta=beta, **kwargs)[0]
    torch.testing.assert_close(ours.mean(), theirs)


@pytest.mark.parametrize("loss_type", ["sigmoid", "sigmoid_norm"])
@pytest.mark.parametrize(("f_divergence", "alpha"), [("forward_kl", 0.5), ("js_divergence", 0.5),
                                                    ("alpha_divergence", 0.5), ("alpha_divergence", -1.0)])
def test_f_dpo_is_trls(f_divergence, alpha, loss_type):
    g = torch.Generator().manual_seed(11)
    mask = torch.zeros(64, 13)
    mask[:, 1:9] = 1
    per_token = -2.0 * torch.rand(64, 12, generator=g)
    logps = (per_token * mask[:, 1:]).sum(1)
    ref = logps + 2.0 * torch.randn(64, generator=g)
    theirs = trl_dpo_loss(loss_type, per_token, mask, ref, beta=0.1, f_divergence_type=f_divergence,
                          f_alpha_divergence_coef=alpha)
    if loss_type == "sigmoid":
        ours = dpo_loss(*logps.chunk(2), *ref.chunk(2), beta=0.1, f_divergence=f_divergence, f_alpha=alpha)[0]
    else:
        ours = pl.sigmoid_norm_loss(*logps.chunk(2), *ref.chunk(2), *mask[:, 1:].sum(1).chunk(2), beta=0.1,
                                    f_divergence=f_divergence, f_alpha=alpha)[0]
    torch.testing.assert_close(ours.mean(), theirs)


def test_mpo_mix_is_trls():
    """MPO's loss_type [sigmoid, bco_pair, sft] with loss_weights [0.8, 0.2, 1.0], as upo's method mix. The chosen
    responses are all 9 tokens long: TRL's sft term averages over the batch's chosen tokens, upo's over each
    response's, then over the pairs (equal at equal lengths; README, The losses)."""
    from upo.config import UPOConfig
    from upo.forward import StepInputs
    from upo.methods import METHODS

    g = torch.Generator().manual_seed(3)
    mask = torch.zeros(64, 13)
    mask[:32, 1:10] = 1  # chosen: 9 tokens
    for row, n in enumerate(torch.randint(1, 13, (32,), generator=g).tolist()):
        mask[32 + row, 1:1 + n] = 1  # rejected: 1-12 tokens
    per_token = -6.0 * torch.rand(64, 12, generator=g)
    logps, lengths = (per_token * mask[:, 1:]).sum(1), mask[:, 1:].sum(1)
    ref = logps + 3.0 * torch.randn(64, generator=g)
    theirs = trl_dpo_loss(["sigmoid", "bco_pair", "sft"], per_token, mask, ref, beta=0.1, loss_weights=[0.8, 0.2, 1.0])
    x = StepInputs(policy_logps=logps, policy_mean_logps=logps / lengths, reference_logps=ref,
                   desirable=torch.arange(64) < 32, rewards=torch.zeros(64), num_tokens=lengths)
    ours, _ = METHODS["mix"].loss(x, UPOConfig(method="mix", beta=0.1, loss_mix={"dpo": 0.8, "bco_pair": 0.2, "sft": 1.0}))
    torch.testing.assert_close(ours, theirs)


def ragged_pairs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """32 pairs of responses 1-12 tokens long: per-token log-probs [64, 12] in (-6, 0) and TRL's mask [64, 13]."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(64, 13)
    for row, n in enumerate(torch.randint(1, 13, (64,), generator=g).tolist()):
        mask[row, 1:1 + n] = 1
    return -6.0 * torch.rand(64, 12, generator=g), mask


@pytest.mark.parametrize("ld_alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("loss_type", ["sigmoid", "sigmoid_norm", "ipo"])
def test_ld_dpo_is_trls(loss_type, ld_alpha):
    """LD-DPO: upo's token weights (upo.pair_weighting.ld_token_weights) make the summed log-probs TRL's ld_alpha
    makes, policy's and (precomputed) reference's, and the method's step (the per-token means given to it plain, as
    `sequence_logps` gives them) the same loss."""
    from upo.config import UPOConfig
    from upo.forward import StepInputs
    from upo.methods import METHODS
    from upo.pair_weighting import ld_token_weights

    per_token, mask = ragged_pairs(5)
    weights = ld_token_weights(mask[:, 1:].bool(), ld_alpha)
    logps, lengths = (per_token * weights).sum(1), mask[:, 1:].sum(1)
    ref = logps + 3.0 * torch.randn(64, generator=torch.Generator().manual_seed(6))
    theirs = trl_dpo_loss(loss_type, per_token, mask, ref, beta=0.1, ld_alpha=ld_alpha)
    x = StepInputs(policy_logps=logps, policy_mean_logps=(per_token * mask[:, 1:]).sum(1) / lengths,
                   reference_logps=ref, desirable=torch.arange(64) < 32, rewards=torch.zeros(64), num_tokens=lengths)
    method = {"sigmoid": "dpo"}.get(loss_type, loss_type)  # TRL's ipo: per-token means (upo's ipo_per_token)
    cfg = UPOConfig(method=method, beta=0.1, ld_alpha=ld_alpha, **({"ipo_per_token": True} if method == "ipo" else {}))
    torch.testing.assert_close(METHODS[method].loss(x, cfg)[0], theirs)
    if ld_alpha < 1:  # the weights change the loss
        plain = (per_token * mask[:, 1:]).sum(1)
        assert not torch.allclose(dpo_loss(*plain.chunk(2), *ref.chunk(2), beta=0.1)[0].mean(),
                                  trl_dpo_loss("sigmoid", per_token, mask, ref, beta=0.1, ld_alpha=ld_alpha))


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "bco_pair", "ipo", ["sigmoid", "bco_pair"]])
def test_wpo_weighting_is_trls(loss_type):
    """WPO: upo's pair weights (from wpo_aligned_logps' per-response means) times each pair's loss, as TRL's
    use_weighting; a loss_type list weights every term (upo: a mix, each term through the method table). Not with
    sft in TRL's list: TRL 1.16 multiplies its expanded scalar in place and raises."""
    from upo.config import UPOConfig
    from upo.forward import StepInputs
    from upo.methods import METHODS
    from upo.pair_weighting import wpo_pair_weights

    per_token, mask = ragged_pairs(9)
    g = torch.Generator().manual_seed(10)
    log_sum_sq = -3.0 * torch.rand(64, 12, generator=g)  # log sum_v p_v^2 in (-3, 0)
    completion = mask[:, 1:]
    logps, lengths = (per_token * completion).sum(1), completion.sum(1)
    ref = logps + 3.0 * torch.randn(64, generator=g)
    theirs = trl_dpo_loss(loss_type, per_token, mask, ref, beta=0.1, log_sum_sq_probs=log_sum_sq)
    aligned_mean = ((per_token - log_sum_sq) * completion).sum(1) / lengths
    weights = wpo_pair_weights(aligned_mean)
    assert weights.std() > 0.1 * weights.mean()  # the weights differ between pairs
    if isinstance(loss_type, list):
        theirs = trl_dpo_loss(loss_type, per_token, mask, ref, beta=0.1, loss_weights=[0.8, 0.2],
                              log_sum_sq_probs=log_sum_sq)
        cfg = UPOConfig(method="mix", beta=0.1, wpo_weighting=True, loss_mix={"dpo": 0.8, "bco_pair": 0.2})
    else:  # TRL's ipo: per-token means
        cfg = UPOConfig(method={"sigmoid": "dpo"}.get(loss_type, loss_type), beta=0.1, wpo_weighting=True,
                        **({"ipo_per_token": True} if loss_type == "ipo" else {}))
    x = StepInputs(policy_logps=logps, policy_mean_logps=logps / lengths, reference_logps=ref,
                   desirable=torch.arange(64) < 32, rewards=torch.zeros(64), num_tokens=lengths, pair_weights=weights)
    ours, metrics = METHODS[cfg.method].loss(x, cfg)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(metrics["wpo/weights"], weights.mean())


# ---- `upo from-trl` (upo.trl_config) against TRL's own config classes -----------------------------


def trl_config_classes() -> dict[str, list[type]]:
    """Per trainer, the dataclasses whose keys a `trl <trainer> --config FILE` YAML holds."""
    import trl
    from trl.experimental.cpo import CPOConfig
    from trl.experimental.orpo import ORPOConfig

    common = [trl.ModelConfig, trl.ScriptArguments]
    return {"dpo": [trl.DPOConfig, *common], "kto": [trl.KTOConfig, *common], "cpo": [CPOConfig, *common],
            "orpo": [ORPOConfig, *common]}


def field_defaults(cls: type) -> dict:
    import dataclasses

    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


@pytest.mark.parametrize("trainer", ["dpo", "kto", "cpo", "orpo"])
def test_the_trl_defaults_written_out_are_trls(trainer):
    from upo.trl_config import LORA_DEFAULTS, TRL_DEFAULTS

    trainer_config, model_config, _ = trl_config_classes()[trainer]
    defaults = field_defaults(trainer_config)
    assert {k: defaults[k] for k in TRL_DEFAULTS} == TRL_DEFAULTS
    assert {k: field_defaults(model_config)[k] for k in LORA_DEFAULTS} == LORA_DEFAULTS


@pytest.mark.parametrize("trainer", ["dpo", "kto", "cpo", "orpo"])
def test_every_key_of_trls_configs_is_translated_listed_or_refused(trainer):
    """No key of TRL 1.16's configs falls through to "not a key upo knows"; and a file of all of
    TRL's defaults translates without an error."""
    import dataclasses

    from upo.trl_config import _HANDLED, _HANDLERS, NO_EFFECT, RENAMED, translate

    classes = trl_config_classes()[trainer]
    keys = {f.name for cls in classes for f in dataclasses.fields(cls)}
    assert keys - (set(RENAMED) | NO_EFFECT | set(_HANDLERS) | _HANDLED) == set()
    all_defaults = {k: v for cls in classes for k, v in field_defaults(cls).items()}
    all_defaults["bf16"] = True  # None: TRL turns it on where the hardware has bf16
    out = translate(all_defaults, trainer)
    assert out.errors == []
