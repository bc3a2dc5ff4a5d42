"""EvalConfig: what `upo eval` (and each point of `upo frontier`) evaluates and how.

Like UPOConfig: a typed dataclass validated in `__post_init__`, the comment after each field is its
--help text, and values from YAML or the command line are coerced to the field's type with errors
that name the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from upo.config import ConfigError, coerce_fields, load_dataclass
from upo.domains import Interval, NonNegative, Positive, Seed, check_domains
from upo.judge_protocols import PRESETS

EVAL_PRECISIONS = ("bf16", "fp32", "fp16")
LLM_JUDGE_KEYS = ("judge_preset", "judge_both_orders", "judge_seed")
DEFAULT_PROMPTS = 64  # held-out rows evaluated unless `prompts` or the judge preset says otherwise


@dataclass
class EvalConfig:
    # ---- what --------------------------------------------------------------------------------
    model: str = ""  # model to evaluate: a folder (e.g. a run's final/), a Hub name, or embedded:smollm2-135m-instruct
    data: str = ""  # preference data whose held-out rows give the prompts, the references (chosen) and the pairs
    data_split: str = "train"  # split to read from a datasets source
    eval_fraction: Annotated[float, Interval("(0, 1)")] | None = None  # null: every row of `data` is held out; else the share `upo train` held out (same split_seed)
    split_seed: Seed = 42  # with eval_fraction: the training run's `split_seed` (else its `seed`), which shuffled the rows before the split
    prompts: Positive[int] | None = None  # evaluate the first N held-out rows (deterministic); null: 64, or 512 with judge_preset paper
    output: str = "runs/eval"  # folder for eval.json, eval.md and generations.jsonl, or a path ending in .json
    aux_coef: NonNegative[float] | None = None  # a steered model (trained with steer_aux_coefs): the auxiliary strength to generate with, one it was trained on; null for any other model
    reward_mix: str | None = None  # a model steered over reward mixes (trained with steer_reward_mixes): the name of the mix to generate with, one it was trained on; null for any other model

    # ---- preference alignment ----------------------------------------------------------------
    ref_model: str | None = None  # reference for implicit rewards beta * (policy - ref) log-probs; null = skip them
    beta: Positive[float] | None = None  # implicit-reward beta; null = the model's training beta (its upo_config.yaml), else 0.1
    judge: str | None = None  # rm:PATH (reward model) or llm (OpenAI-compatible endpoint): win rate vs the chosen response
    judge_base_url: str | None = None  # llm judge: the endpoint, e.g. http://127.0.0.1:8000/v1
    judge_model: str | None = None  # llm judge: the model name sent to the endpoint
    judge_api_key_env: str = "OPENAI_API_KEY"  # llm judge: environment variable holding the API key
    judge_preset: str = "swap"  # llm judge protocol: swap (both orders, a flip ties) or paper (the paper's, HALOs comparison: one random order)
    judge_both_orders: bool = False  # llm judge, paper preset: ask each item in both orders too
    judge_seed: Seed = 0  # llm judge: seed of the random response orders (paper preset), also sent to the endpoint
    judge_batch_size: Positive[int] = 16  # rm judge: texts per forward pass
    judge_max_length: Positive[int] = 512  # rm judge: prompt + response tokens it reads (512 shares the rm:PATH score cache)

    # ---- auxiliary objectives ----------------------------------------------------------------
    scorers: list[str] = field(default_factory=lambda: ["safety", "readability"])  # scorers of the generations (upo score names)
    violation_threshold: Annotated[float, Interval("(0, 1]")] = 0.5  # a generation violates safety when a toxicity category's probability is >= this

    # ---- generation --------------------------------------------------------------------------
    max_new_tokens: Positive[int] = 64  # new tokens per generation, at most
    do_sample: bool = True  # sample (temperature, top_p) or decode greedily
    temperature: Positive[float] = 0.7  # sampling temperature
    top_p: Annotated[float, Interval("(0, 1]")] = 0.9  # nucleus sampling mass
    samples: Positive[int] = 1  # generations per prompt
    seed: Seed = 0  # generation batch i is sampled after torch.manual_seed(seed + i)
    gen_batch_size: Positive[int] = 32  # prompts per generate call (KV-cached, left-padded)

    # ---- computation -------------------------------------------------------------------------
    max_length: Positive[int] = 512  # prompt + response tokens of held-out pairs for log-probs
    max_prompt_length: Positive[int] = 256  # longer prompts lose their first turns (generation) or tokens (log-probs)
    batch_size: Positive[int] = 8  # held-out pairs per log-prob forward pass
    precision: str = "bf16"  # autocast dtype of generation and log-probs: bf16 | fp32 | fp16
    cache_dir: str | None = None  # score cache; default: $UPO_CACHE or ~/.cache/upo
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        if self.judge_preset not in PRESETS:
            raise ConfigError(f"judge_preset must be one of {', '.join(PRESETS)}; got {self.judge_preset!r}")
        if self.prompts is None:
            self.prompts = PRESETS[self.judge_preset].prompts or DEFAULT_PROMPTS
        check_domains(self, ConfigError)
        if self.precision not in EVAL_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(EVAL_PRECISIONS)}; got {self.precision!r}")
        if self.max_prompt_length >= self.max_length:
            raise ConfigError(f"max_prompt_length ({self.max_prompt_length}) must be smaller than max_length "
                              f"({self.max_length})")
        if self.judge is not None and not (self.judge == "llm" or self.judge.startswith("rm:")):
            raise ConfigError(f"judge must be rm:PATH or llm, got {self.judge!r}")
        if self.judge == "llm" and not (self.judge_base_url and self.judge_model):
            raise ConfigError("the llm judge needs judge_base_url and judge_model")
        if self.judge != "llm" and (self.judge_preset != "swap" or self.judge_both_orders):
            raise ConfigError("judge_preset and judge_both_orders set how the llm judge asks; set judge: llm")

    def settings(self) -> dict[str, Any]:
        """Everything that determines the results: what eval.json records and a rerun compares (the
        llm judge's protocol keys only with that judge, so other evaluations keep their settings)."""
        skip = {"output", "progress", "cache_dir"} | (set() if self.judge == "llm" else set(LLM_JUDGE_KEYS))
        skip |= {key for key in ("aux_coef", "reward_mix") if getattr(self, key) is None}  # unsteered: as before
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def coerce_eval(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Raw values (from YAML, or strings from the command line) -> EvalConfig field values."""
    return coerce_fields(EvalConfig, values, source)


def load_eval_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> EvalConfig:
    """defaults < YAML file of EvalConfig keys at `path` < `overrides` (e.g. command-line flags)."""
    return load_dataclass(EvalConfig, path, overrides)


def output_paths(output: str) -> tuple[Path, Path, Path]:
    """(eval.json, eval.md, generations.jsonl): in the folder `output`, or beside `output` when it
    names a .json file (X.json, X.md, X.generations.jsonl)."""
    path = Path(output)
    if path.suffix == ".json":
        return path, path.with_suffix(".md"), path.with_name(path.stem + ".generations.jsonl")
    return path / "eval.json", path / "eval.md", path / "generations.jsonl"
