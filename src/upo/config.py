"""One typed config for every upo run.

Precedence: dataclass defaults < YAML file < command-line flags. Unknown keys and values of the
wrong type are errors that name the key. The resolved config is written next to every run
(`config.yaml`), every checkpoint and the final model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from upo.config_values import (  # noqa: F401  (ConfigError and the loaders are imported from here too)
    ConfigError,
    checked_mixes,
    coerce_fields,
    field_comments,
    load_dataclass,
    read_yaml_mapping,
)
from upo.domains import Interval, NonNegative, Positive, Seed, check_domains

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"

PREFERENCE_TERMS = ("kto", "dpo", "ipo")
OPTIMIZERS = ("adamw", "rmsprop")
PRECISIONS = ("bf16", "fp32", "fp16")
AUX_LOGP = ("mean", "sum")
CPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo")
TOKEN_INITS = ("text", "mean")
# What a run written before a key existed did, where that is not the key's default (a run folder's
# config.yaml without the key is compared as if it held this value: upo.frontier.folders).
BEFORE_ADDED = {"control_token_init": "mean"}
LR_SCHEDULERS = ("constant", "linear", "cosine")
LORA_BASE_DTYPES = ("fp32", "bf16")
QUANT_TYPES = ("nf4", "fp4")
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")  # upo.losses.f_divergence_scores
TRACKERS = ("tensorboard", "trackio", "wandb", "mlflow")  # report_to: Accelerate's trackers, each its own pip package


@dataclass
class UPOConfig:
    # ---- model -------------------------------------------------------------------------------
    model: str = EMBEDDED_MODEL  # local folder, Hub name (online), or the embedded SmolLM2-135M-Instruct
    ref_model: str | None = None  # reference model; null = the starting point of `model` (with LoRA: adapters disabled)
    precompute_ref_logps: bool = True  # compute reference log-probs once before training (by the policy itself unless ref_model is set); false = a frozen fp32 copy computes them every step
    sync_ref_model: bool = False  # TR-DPO (Gorbatovski et al. 2024; TRL's sync_ref_model): every ref_model_sync_steps optimizer steps the reference becomes ref_model_mixup_alpha * policy + (1 - alpha) * itself; needs the reference copy (precompute_ref_logps: false, lora: false)
    ref_model_mixup_alpha: Annotated[float, Interval("[0, 1]")] = 0.6  # sync_ref_model: the policy's share of the updated reference (1: a copy of the policy)
    ref_model_sync_steps: Positive[int] = 512  # sync_ref_model: optimizer steps between two updates of the reference
    cache_reference_logps: bool = True  # reuse the precomputed reference log-probs of an earlier run whose reference forward saw exactly the same inputs, model and settings (README, Training); kept in cache_dir/reference_logps
    attn_implementation: str | None = None  # eager | sdpa | flash_attention_2; null = eager without CUDA (faster on CPU), else the transformers default
    padding_free: bool = True  # run the model on real tokens only (a batch's sequences packed into one row, attention kept within each); false = pad to the batch's longest
    shared_prompt: bool = True  # padding-free pairs run their prompt once: [prompt, chosen, rejected] packed, the rejected tokens blind to the chosen (exact; off on CUDA with torch >= 2.10, whose varlen kernel cannot mask it)
    logits_chunk_tokens: Positive[int] | None = 1024  # the LM head and log-softmax run on this many completion tokens at a time, recomputed in backward (exact); null = all at once
    gradient_checkpointing: bool = False  # keep only each decoder layer's input and recompute its activations in backward (transformers' non-reentrant checkpointing): far less activation memory at long sequences and large models for about a third more compute; the same updates

    # ---- data --------------------------------------------------------------------------------
    dataset: str = ""  # .jsonl / .jsonl.gz / .json file, or a datasets.load_dataset name or folder
    dataset_split: str = "train"  # split to read from a datasets source
    eval_dataset: str | None = None  # held-out pairs from a separate source; null = split `eval_fraction` off `dataset`
    eval_split: str | None = None  # split of eval_dataset to read from a datasets source (e.g. "test"); null = dataset_split
    eval_fraction: Annotated[float, Interval("[0, 1)")] = 0.05  # share of `dataset` held out for evaluation when no eval_dataset is given
    max_examples: Positive[int] | None = None  # keep only the first N examples (after shuffling with seed)
    max_length: Positive[int] = 512  # prompt + response tokens
    max_prompt_length: Positive[int] = 256  # prompts longer than this keep their last tokens
    group_by_length: bool = True  # batches of similar length, padded to their own longest

    # ---- method ------------------------------------------------------------------------------
    method: str = "upo"  # upo | dpo | ipo | mix | hinge | robust | nca_pair | bco_pair | sppo_hard | apo_zero | apo_down | exo_pair | discopop | aot | aot_unpaired | sigmoid_norm | kto | apo_zero_unpaired | simpo | cpo | orpo | sft | csft | oppo | aoppo | modpo | alol | drov (README method table)
    pref_loss: str = "kto"  # UPO's preference term: kto | dpo | ipo
    loss_mix: Positive[dict[str, float]] | None = None  # mix: paired method -> weight; the loss is the weighted sum of their losses (TRL's loss_type list with loss_weights; MPO: {dpo: 0.8, bco_pair: 0.2, sft: 1}) (README, The losses)
    beta: Positive[float] = 0.1  # KL strength of the implicit reward beta * logratio (also DRO-V's tau; the reward scale of SimPO (its authors: 2-2.5) and CPO; ORPO's lambda)
    label_smoothing: Annotated[float, Interval("[0, 0.5)")] = 0.0  # conservative DPO (Mitchell 2023), also SimPO's, CPO's and AOT's; robust: the assumed label flip rate; 0 = plain DPO
    ipo_per_token: bool = False  # ipo: per-token mean log-ratios (each over its response length, as TRL 1.16's ipo) instead of the paper's summed ones
    f_divergence: str = "reverse_kl"  # dpo, sigmoid_norm: the regularizer's f-divergence, reverse_kl (DPO) | forward_kl | js_divergence | alpha_divergence (f-DPO, Wang et al. 2023; TRL's f_divergence_type)
    f_alpha_divergence_coef: Annotated[float, Interval("(-inf, inf)")] = 0.5  # dpo, sigmoid_norm with f_divergence alpha_divergence: its alpha, as TRL's (f'(u) = (u^(alpha-1) - 1) / (alpha-1))
    ld_alpha: Annotated[float, Interval("[0, 1]")] | None = None  # LD-DPO (Liu et al. 2024; TRL's ld_alpha): in each response's log-prob (policy's and reference's), the tokens past the pair's shared length (the shorter response's) count ld_alpha times (per-token means, as the NLL terms', stay plain); paired methods with a reference; null = all count once
    wpo_weighting: bool = False  # WPO (Zhou et al. 2024; TRL's use_weighting): each pair's loss times w(chosen) * w(rejected), w = exp(mean per-token log p - log sum_v p_v^2) under the policy, detached; DPO's family, sft and their mixes
    rpo_alpha: NonNegative[float] = 0.0  # dpo: weight of the chosen responses' per-token NLL added to DPO (RPO, Pang et al. 2024); 0 = plain DPO
    simpo_gamma: NonNegative[float] = 0.5  # simpo: target reward margin gamma (absolute; its authors' gamma / beta is 0.3-0.8)
    exo_epsilon: Annotated[float, Interval("(0, 0.5)")] = 1e-3  # exo_pair: the labels' assumed error rate e, target distribution (1 - e, e) (TRL: label_smoothing)
    discopop_tau: Positive[float] = 0.05  # discopop: temperature of the blend between logistic and exponential loss (its authors' 0.05)
    alphapo_alpha: Annotated[float, Interval("(-inf, inf)")] = 0.0  # simpo, cpo: AlphaPO's reward shape (1 - p^-alpha) / alpha in place of log p (Gupta et al. 2025; TRL's CPOConfig alpha); 0 = log p
    cpo_alpha: NonNegative[float] = 1.0  # cpo: weight of the chosen responses' per-token NLL
    cpo_loss_type: str = "sigmoid"  # cpo: its preference term on h = logp_w - logp_l, as TRL's CPOTrainer loss_type: sigmoid (CPO's -log sigmoid(beta h)) | hinge (max(0, 1 - beta h)) | ipo ((h - 1/(2 beta))^2 on per-token means)
    desirable_weight: Positive[float] = 1.0  # KTO lambda_D
    undesirable_weight: Positive[float] = 1.0  # KTO lambda_U
    aux_coef: NonNegative[float] = 1.0  # lambda: weight of UPO's advantage-weighted likelihood
    steer_aux_coefs: list[float] | None = None  # steered UPO: one policy for all these lambdas, each example drawn one and told it by a control token, or each step drawn one that scales a second adapter (steer_by) (README, Steered UPO); null = off
    steer_reward_mixes: dict[str, dict[str, float]] | None = None  # steered UPO over reward mixes: name -> rewards mapping, each example drawn one (with steer_aux_coefs, one pair) and told it by a control token; replaces rewards (README, Steered UPO); null = off
    steer_aux_weights: list[int] | None = None  # steer_by adapter: how many steps of every sum(weights) train each steer_aux_coefs value, in its order (e.g. [2, 1, 1, 1]: aux_coef 0 on 2 of every 5 steps); null = one each
    steer_by: str = "token"  # how a steered policy is told its aux_coef: "token" = a control token after the prompt; "adapter" = a second LoRA adapter scaled by aux_coef / max(steer_aux_coefs), one condition per optimizer step (lora: true; aux_coef only) (README, Steered UPO)
    control_token_init: str = "text"  # embeddings of new control tokens (steering's, CSFT's): "text" = the mean embedding of the text each stands for ("0.3", a mix's name, "desirable"), distinct from the start; "mean" = transformers' resize default, every new row near the vocabulary's mean, all nearly alike
    eta: Positive[float] = 1.0  # AWR temperature, on standardized rewards
    max_weight: Positive[float] = 20.0  # clip of exp(A / eta)
    tau: Annotated[float, Interval("(0, 1)")] = 0.7  # expectile of the value regression
    aux_logp: str = "mean"  # log-prob in the aux term: per-token "mean" or "sum"
    value_head_hidden: Positive[int] = 256  # width of the value head's MLP
    value_lr: Positive[float] = 1e-3  # the value head is tiny and starts from scratch: it needs a larger lr
    ppo_clip: Annotated[float, Interval("(0, 1)")] = 0.2  # oppo / aoppo: PPO's epsilon, the policy ratio is clipped to [1 - eps, 1 + eps]
    alol_clip: Annotated[float, Interval("(0, 1)")] = 0.9  # alol: epsilon of A-LoL's importance-weight clip (the A-LoL authors' default)
    modpo_w0: Positive[float] = 1.0  # modpo: weight of the preference objective; margin = (beta * h - r_a margin) / w0

    # ---- auxiliary rewards -------------------------------------------------------------------
    rewards: dict[str, float] = field(default_factory=dict)  # auxiliary rewards: name -> weight; built-ins (README) or pkg.module:function
    # Preference baselines given the auxiliary information: re-rank pairs by r_p-proxy + r_a.
    relabel: bool = False  # swap a pair when r_a(rejected) - r_a(chosen) > relabel_margin (any preference method)
    relabel_margin: NonNegative[float] = 1.0  # the proxy user reward's gap between chosen and rejected, in standardized units
    standardize_rewards: bool = True  # standardize each reward over the training set before weighting
    cache_dir: str | None = None  # default: $UPO_CACHE or ~/.cache/upo

    # ---- optimization ------------------------------------------------------------------------
    output_dir: str = "runs/upo"  # run folder: config.yaml, metrics.jsonl, checkpoints/, final/
    seed: Seed = 42  # seeds data order, initialization and sampling (and the held-out split unless split_seed is set)
    split_seed: Seed | None = None  # seeds the held-out split and the max_examples pick; null = seed (runs of several seeds then share one split)
    num_epochs: Positive[int] = 1  # passes over the training data (unless max_steps is set)
    max_steps: Positive[int] | None = None  # optimizer steps; overrides num_epochs when set
    batch_size: Positive[int] = 4  # pairs (paired methods) or examples (unpaired) per micro-batch
    gradient_accumulation_steps: Positive[int] = 1  # micro-batches per optimizer step
    optimizer: str = "adamw"  # adamw | rmsprop (the paper uses RMSprop)
    learning_rate: Positive[float] = 5e-6  # policy learning rate (LoRA needs ~1e-4; full fine-tuning ~1e-6 to 5e-6)
    weight_decay: NonNegative[float] = 0.0  # decoupled weight decay of the policy parameters
    warmup_steps: NonNegative[int] = 0  # linear warmup of the learning rate over this many optimizer steps
    lr_scheduler: str = "constant"  # constant | linear | cosine (after warmup)
    max_grad_norm: Positive[float] | None = 1.0  # clip the gradient norm to this; null = no clipping
    precision: str = "bf16"  # autocast dtype; weights and optimizer state stay fp32

    # ---- LoRA (peft) -------------------------------------------------------------------------
    lora: bool = False  # train LoRA adapters (peft) instead of all weights
    lora_r: Positive[int] = 16  # LoRA rank
    lora_alpha: Positive[int] = 32  # LoRA scaling numerator (scale = alpha / r)
    lora_dropout: Annotated[float, Interval("[0, 1)")] = 0.0  # dropout on the LoRA branch
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # module names to adapt, or all-linear
    lora_modules_to_save: list[str] = field(default_factory=list)  # modules trained in full beside the adapters and saved with them, e.g. [lm_head] (peft's modules_to_save: names matched as peft matches them)
    use_rslora: bool = False  # rank-stabilized LoRA: scale alpha / sqrt(r) instead of alpha / r (Kalajdzievski 2023; peft's use_rslora)
    use_dora: bool = False  # DoRA: each adapted weight's magnitude trained apart from its LoRA direction (Liu et al. 2024; peft's use_dora)
    merge_lora: bool = True  # merge adapters into the weights of final/
    lora_base_dtype: str = "fp32"  # the frozen base weights' dtype: fp32, or bf16 for half their memory (the model's norms and residual stream then run in bf16, as a bf16 model's do; adapters and optimizer state stay fp32; needs precision: bf16)
    load_in_4bit: bool = False  # QLoRA: the frozen base quantized to 4 bits as it loads (bitsandbytes: pip install 'upo[qlora]'), LoRA adapters trained on it; final/ holds the dequantized base with the adapters merged (README, QLoRA)
    bnb_4bit_quant_type: str = "nf4"  # load_in_4bit: the 4-bit data type, nf4 (QLoRA's NormalFloat) or fp4
    use_bnb_nested_quant: bool = False  # load_in_4bit: quantize the quantization constants too (QLoRA's double quantization: ~0.4 bits a weight less)

    # ---- logging, evaluation, checkpoints ----------------------------------------------------
    logging_steps: Positive[int] = 1  # write train metrics every N optimizer steps
    report_to: list[str] = field(default_factory=list)  # also log metrics and config to: tensorboard, trackio, wandb, mlflow (README, Tracking and curves); [] = metrics.jsonl only
    plot_curves: bool = True  # at the end, draw the training curves into plots/*.png (as `upo plot OUTPUT_DIR` does)
    heldout_eval: bool = True  # held-out metrics during training (every eval_steps, and at the end); false: the split is only held out, e.g. for `upo eval` afterwards (`upo frontier` sweeps)
    eval_steps: Positive[int] | None = None  # None: evaluate at the end only
    save_steps: Positive[int] | None = None  # None: no intermediate checkpoints
    save_total_limit: Positive[int] = 2  # keep only the N newest checkpoints
    resume: bool = False  # continue from the latest checkpoint in output_dir
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        check_domains(self, ConfigError)
        _check_choice("pref_loss", self.pref_loss, PREFERENCE_TERMS)
        _check_choice("f_divergence", self.f_divergence, F_DIVERGENCES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("aux_logp", self.aux_logp, AUX_LOGP)
        _check_choice("cpo_loss_type", self.cpo_loss_type, CPO_LOSS_TYPES)
        _check_choice("control_token_init", self.control_token_init, TOKEN_INITS)
        _check_choice("lora_base_dtype", self.lora_base_dtype, LORA_BASE_DTYPES)
        _check_choice("bnb_4bit_quant_type", self.bnb_4bit_quant_type, QUANT_TYPES)
        if self.lora and self.lora_base_dtype == "bf16" and self.precision != "bf16":
            raise ConfigError(f"lora_base_dtype: bf16 computes in bf16: set precision: bf16 (got {self.precision!r})")
        _check_choice("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        for tracker in self.report_to:
            _check_choice("report_to", tracker, TRACKERS)
        if self.max_prompt_length >= self.max_length:
            raise ConfigError(
                f"max_prompt_length ({self.max_prompt_length}) must be smaller than max_length ({self.max_length})"
            )
        # Method names are checked against the method table lazily (upo.methods imports torch).
        from upo.methods import METHODS

        _check_choice("method", self.method, tuple(METHODS))
        ignored = self._ignored_keys(METHODS[self.method])
        if ignored:
            raise ConfigError(
                "set but not read by this run, so they would be ignored: "
                + "; ".join(f"{key} ({why})" for key, why in ignored.items())
                + ". Remove them, or set what they depend on"
            )
        self._check_steering(METHODS)
        self._check_mix(METHODS[self.method])
        self._check_lora_variants(METHODS[self.method])
        takes_rewards = [name for name, m in METHODS.items() if m.uses_rewards or m.accepts_rewards]
        if self.rewards and self.method not in takes_rewards and not self.relabel:
            raise ConfigError(
                f"rewards are set ({', '.join(self.rewards)}) but method {self.method!r} does not use them: they "
                f"would be ignored. Remove them, set relabel: true to re-rank the pairs by them, or choose a method "
                f"that uses them ({', '.join(takes_rewards)})"
            )

    def _check_steering(self, methods: dict) -> None:
        """steer_aux_coefs: distinct values >= 0; steer_reward_mixes: named reward mappings, in place
        of `rewards`; either: a method that can be steered, reference log-probs computed once (they do
        not depend on the condition: upo.data.steering)."""
        steered = [key for key in ("steer_aux_coefs", "steer_reward_mixes") if getattr(self, key) is not None]
        if not steered:
            return
        keys = " and ".join(steered)
        steerable = [name for name, m in methods.items() if m.steerable]
        if self.method not in steerable:
            raise ConfigError(f"{keys}: method {self.method!r} cannot be steered; use {', '.join(steerable)}")
        coefs = self.steer_aux_coefs
        # distinct as their control tokens write them (6 significant digits: upo.data.steering)
        if coefs is not None and (not coefs or not all(0 <= c < float("inf") for c in coefs)
                                  or len({f"{c:g}" for c in coefs}) != len(coefs)):
            raise ConfigError(f"steer_aux_coefs must be a non-empty list of distinct finite numbers >= 0, got {coefs}")
        if coefs is not None:
            self.steer_aux_coefs = [float(c) for c in coefs]
        if self.steer_reward_mixes is not None:
            self.steer_reward_mixes = checked_mixes(self.steer_reward_mixes)
            if self.rewards or self.relabel:
                raise ConfigError("steer_reward_mixes replaces rewards: each mix is a rewards mapping of its own, and "
                                  "an example's r_a is its mix's; remove rewards (and relabel, which re-ranks pairs "
                                  "by one reward)")
        if self.steer_by not in ("token", "adapter"):
            raise ConfigError(f"steer_by must be 'token' or 'adapter', got {self.steer_by!r}")
        if self.steer_by == "adapter":
            if self.steer_reward_mixes is not None or not self.lora or not self.merge_lora:
                raise ConfigError("steer_by: adapter scales a second LoRA adapter by aux_coef: it needs lora: true and "
                                  "merge_lora: true, and steers aux_coef only (steer_aux_coefs, no steer_reward_mixes)")
            if max(self.steer_aux_coefs) <= 0:
                raise ConfigError("steer_by: adapter scales its adapter by aux_coef / max(steer_aux_coefs): "
                                  "steer_aux_coefs needs a value > 0")
        weights = self.steer_aux_weights
        if weights is not None and (self.steer_aux_coefs is None or len(weights) != len(self.steer_aux_coefs)
                                    or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1
                                               for w in weights)):
            raise ConfigError(f"steer_aux_weights must be one whole number >= 1 per steer_aux_coefs value "
                              f"({self.steer_aux_coefs}), got {weights}")
        if not self.precompute_ref_logps:
            raise ConfigError(f"{keys} needs precompute_ref_logps: true: the reference log-probs do not "
                              "depend on the condition, so they are computed once, from the prompts without it")

    def _check_lora_variants(self, method) -> None:
        """What peft or the numbers cannot do: DoRA, rsLoRA or saved modules beside steering's second adapter,
        saved modules beside new control tokens' trained rows, AlphaPO > 0 on CPO's summed log-probs."""
        steered = self.steer_aux_coefs is not None or self.steer_reward_mixes is not None
        variants = [k for k in ("use_dora", "use_rslora", "lora_modules_to_save") if getattr(self, k)]
        if self.lora and steered and self.steer_by == "adapter" and variants:
            raise ConfigError(f"steer_by: adapter combines two plain LoRA adapters into one (the sum of their "
                              f"factors), which {', '.join(variants)} would not be; steer by token, or remove them")
        tokens = method.control_tokens or (steered and self.steer_by == "token")
        if self.lora and self.lora_modules_to_save and tokens:
            raise ConfigError("lora_modules_to_save with new control tokens (csft, steering by token): peft trains the "
                              "tokens' embedding rows and cannot also save whole modules around a tied embedding; "
                              "remove lora_modules_to_save")
        if self.sync_ref_model and (self.precompute_ref_logps or self.lora):
            raise ConfigError("sync_ref_model updates a copy of the reference as training goes: set "
                              "precompute_ref_logps: false (log-probs computed once cannot follow it)"
                              + (" and train without lora (its reference is the base with the adapters off, "
                                 "not a copy)" if self.lora else ""))
        cpo = self.method == "cpo" or (method.mixes and "cpo" in (self.loss_mix or {}))
        if cpo and self.alphapo_alpha > 0 and self.cpo_loss_type != "ipo":  # ipo compares per-token means
            raise ConfigError(f"alphapo_alpha {self.alphapo_alpha} with cpo: CPO's reward is a response's summed "
                              "log-prob, and (1 - p^-alpha) / alpha of it overflows for any long response; use "
                              "alphapo_alpha with simpo or cpo_loss_type ipo (per-token means), or < 0 with cpo")

    def _check_mix(self, method) -> None:
        """A mix names at least one of the methods it can sum."""
        if not method.mixes:
            return
        from upo.methods import mixable

        terms = self.loss_mix or {}
        if not terms:
            raise ConfigError(f"method mix sums the losses of the methods in loss_mix: set it, e.g. "
                              f"{{dpo: 0.8, bco_pair: 0.2, sft: 1.0}} (of {', '.join(mixable())})")
        for name in terms:  # each weight is checked against its domain, > 0 (check_domains)
            if name not in mixable():
                raise ConfigError(f"loss_mix: {name!r} is not a method a mix can sum; those are {', '.join(mixable())}"
                                  " (paired, without a value head or auxiliary rewards)")

    def _ignored_keys(self, method) -> dict[str, str]:
        """Keys set away from their default that nothing in this run reads -> why not."""
        return {k: why for k, why in self.unread_keys(method).items() if getattr(self, k) != _DEFAULTS[k]}

    def unread_keys(self, method=None) -> dict[str, str]:
        """Every key nothing in this run reads, whatever its value -> why not (`method`: its entry in
        the method table, looked up when not given)."""
        if method is None:
            from upo.methods import METHODS

            method = METHODS[self.method]
        unread: dict[str, str] = {}
        steered = self.steer_aux_coefs is not None or self.steer_reward_mixes is not None
        if not (method.control_tokens or (steered and self.steer_by == "token")):
            unread["control_token_init"] = ("no new control tokens: the run is neither steered by token nor csft")
        if not steered:
            unread["steer_by"] = "the run is not steered (no steer_aux_coefs or steer_reward_mixes)"
        if not (self.steer_aux_coefs is not None and self.steer_by == "adapter"):
            unread["steer_aux_weights"] = ("it weighs the steps of a run steered by adapter (steer_aux_coefs, "
                                           "steer_by: adapter); steered by token, every example cycles through "
                                           "the values")
        if not self.lora:
            unread.update(dict.fromkeys(("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "merge_lora",
                                         "lora_base_dtype", "load_in_4bit", "use_rslora", "use_dora",
                                         "lora_modules_to_save"), "lora is false"))
        if not (self.lora and self.load_in_4bit):
            unread.update(dict.fromkeys(("bnb_4bit_quant_type", "use_bnb_nested_quant"), "load_in_4bit is false"))
        if not self.relabel:
            unread["relabel_margin"] = "relabel is false"
        if not self.eval_dataset:
            unread["eval_split"] = "no eval_dataset"
        if not (self.eval_dataset or self.eval_fraction > 0):
            unread["eval_steps"] = "no held-out data: eval_fraction is 0 and no eval_dataset"
        if not self.heldout_eval:
            unread["eval_steps"] = "heldout_eval is false: no held-out metrics during training"
        if self.save_steps is None:
            unread["save_total_limit"] = "save_steps is null: no checkpoints"
        if not method.uses_value_head:
            unread.update(dict.fromkeys(("value_head_hidden", "value_lr"), f"method {self.method!r} has no value head"))
        if self.steer_aux_coefs is not None:
            unread["aux_coef"] = "steer_aux_coefs gives every example its own"
        from upo.methods import unread_setting_keys, uses_reference

        unread.update(unread_setting_keys(method, self.pref_loss, self.loss_mix, self.aux_logp, self.cpo_loss_type))
        if not self.sync_ref_model:
            unread.update(dict.fromkeys(("ref_model_mixup_alpha", "ref_model_sync_steps"), "sync_ref_model is false"))
        if not uses_reference(method, self.loss_mix):
            unread.update(dict.fromkeys(("ref_model", "precompute_ref_logps"),
                                        f"method {self.method!r} uses no reference model"))
        # Hyperparameters of another method's loss (the table's `Method.reads`).
        from upo.methods import method_readers, unread_method_keys

        run = f"method {self.method!r}" + (f" with pref_loss {self.pref_loss!r}" if "pref_loss" in method.reads else "") \
            + (f" with loss_mix {', '.join(self.loss_mix or {})}" if method.mixes else "")
        for key in unread_method_keys(self.method, self.pref_loss, self.loss_mix):
            unread[key] = f"{run} does not read it; read by {', '.join(method_readers(key))}"
        return unread

    @property
    def heldout_seed(self) -> int:
        """The seed of the held-out split and of the max_examples pick: split_seed, else seed."""
        return self.seed if self.split_seed is None else self.split_seed

    # -- serialization ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


# ---- building a config from a file and flags ---------------------------------------------------

FIELDS = {f.name: f for f in dataclasses.fields(UPOConfig)}
_DEFAULTS = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory() for f in FIELDS.values()}


def coerce(key: str, value: Any, source: str = "config") -> Any:
    """Convert `value` (from YAML, or a string from the command line) to the type of field `key`."""
    return coerce_fields(UPOConfig, {key: value}, source)[key]


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> UPOConfig:
    """defaults < YAML file at `path` < `overrides` (already split into key -> raw value)."""
    return load_dataclass(UPOConfig, path, overrides)
