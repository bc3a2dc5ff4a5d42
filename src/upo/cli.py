"""The `upo` command: the one place that turns names from the command line into objects."""

from __future__ import annotations

import argparse
import sys

from upo.cli_parser import build_parser
from upo.config import FIELDS, ConfigError, UPOConfig, load_config
from upo.stop import TrainingStopped


def config_from_args(args: argparse.Namespace) -> UPOConfig:
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg.")}
    return load_config(args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = next((u for u in unknown if u.startswith("-")), unknown[0])
        import difflib

        close = difflib.get_close_matches(flag.lstrip("-"), list(FIELDS), n=1)
        hint = f" (did you mean --{close[0]}?)" if close else ""
        parser.error(f"unknown argument {flag}{hint}")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "train":
            from upo.trainer import train

            final = train(config_from_args(args))
            print(f"upo: done; model saved to {final}")
        elif args.command == "score":
            from upo.score import run_score

            run_score(args.data, args.scorers, args.output, args.cache_dir)
        elif args.command == "eval":
            from upo.evaluation.config import load_eval_config, output_paths
            from upo.evaluation.eval import run_eval
            from upo.evaluation.report import format_eval

            cfg = load_eval_config(args.config, {k[5:]: v for k, v in vars(args).items() if k.startswith("eval.")})
            print(format_eval(run_eval(cfg)))
            print(f"upo: wrote {', '.join(map(str, output_paths(cfg.output)))}")
        elif args.command == "compare":
            from upo.evaluation.compare import run_compare

            print(run_compare(args.a, args.b, args.output))
        elif args.command == "frontier":
            from upo.frontier.run import run_frontier

            if args.status:
                from upo.frontier.status import sweep_status

                ignored = [flag for flag, value in (("--seeds", args.seeds), ("--points", args.points),
                                                    ("--finished", args.finished)) if value]
                if ignored:
                    raise ConfigError(f"--status lists every run of the sweep; it takes no {' or '.join(ignored)}")

                print(sweep_status(args.config, quick=args.quick, output_dir=args.output_dir))
                return 0
            return run_frontier(args.config, quick=args.quick, output_dir=args.output_dir, only_seeds=args.seeds,
                                only_points=args.points, finished_only=args.finished)
        elif args.command == "rm":
            from upo.rm.config import load_rm_config
            from upo.rm.train import format_rm_metrics, train_reward_model

            cfg = load_rm_config(args.config, {k[3:]: v for k, v in vars(args).items() if k.startswith("rm.")})
            print(format_rm_metrics(*train_reward_model(cfg)))
        elif args.command == "validate":
            from upo.validate import run_validate

            return run_validate(args.data, split=args.split, model=args.model, max_length=args.max_length,
                                max_prompt_length=args.max_prompt_length, cache_dir=args.cache_dir)
        elif args.command == "plot":
            from upo.curves import plot_curves

            paths = plot_curves(args.run_dir, args.output_dir)
            print(f"upo: wrote {paths[0]} and {len(paths) - 1} panels beside it: {', '.join(p.stem for p in paths[1:])}")
        elif args.command == "from-trl":
            from upo.trl_config import run_from_trl

            run_from_trl(args.trl_config, args.trainer, args.output)
        elif args.command == "rejudge":
            from upo.evaluation.rejudge import rejudge

            failed = 0
            for evaluation in args.evaluations:  # one evaluation's problem does not stop the others
                try:
                    result = rejudge(evaluation, args.judge, only_if_changed=args.if_changed)
                except user_errors() as e:
                    print(f"upo rejudge: {evaluation}: error: {e}", file=sys.stderr)
                    failed += 1
                    continue
                print(f"upo rejudge: {evaluation}: " + ("judged by these weights already" if result is None else
                      f"win rate {result['metrics']['judge/win_rate']:.3f}"))
            if failed:
                print(f"upo rejudge: {failed} of {len(args.evaluations)} evaluations failed (above)", file=sys.stderr)
                return 1
        elif args.command == "demo":
            from upo.demo.run import run_demo

            run_demo(args.output_dir, steps=args.steps, quick=args.quick, seed=args.seed)
    except user_errors() as e:
        # Errors a user can act on: one clear line, no traceback.
        print(f"upo: error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:  # SIGTERM / SIGUSR1 while training (upo.stop): a checkpoint of that step
        print(f"upo: {e}; rerun the same command{' with --resume true' if args.command == 'train' else ''} "
              "to continue from it", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        from upo.checkpoint import resume_hint

        print(f"upo: interrupted{resume_hint(config_from_args(args).output_dir) if args.command == 'train' else ''}",
              file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it
    return 0


def user_errors() -> tuple[type[Exception], ...]:
    """The errors `main` reports as one line: bad input, and an LLM judge's endpoint failing
    (`upo.judges.JudgeError`, where that module was imported: importing it here would load torch)."""
    judges = sys.modules.get("upo.judges")
    return (ConfigError, FileNotFoundError, FileExistsError, ValueError) + ((judges.JudgeError,) if judges else ())


if __name__ == "__main__":
    sys.exit(main())
