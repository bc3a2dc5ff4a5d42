"""How often the frontier's paired intervals exclude 0 when two points do not differ (simulated).

    python scripts/interval_calibration.py               # 300 simulated sweeps per case, ~2 min
    python scripts/interval_calibration.py --reps 1000 --seeds 3

Each simulated comparison is two points evaluated on the same n prompts with k training seeds each,
whose true means are equal. It is bootstrapped as `upo frontier` and `upo compare` do
(`upo.stats.paired_difference_draws`: prompts resampled once for both points, each point's seeds on
their own, the seed part scaled by sqrt(k / (k - 1)) and by t(nu) / z, nu the Welch-Satterthwaite
degrees of freedom of the two points' seed variances: `seed_t_scale`), and, for contrast, without
the t correction, and with the prompts alone resampled. Reported per case: the share of the 95%
intervals that exclude 0 (a false "better"; 0.05 is nominal) and their mean width. The cases:

- a rare rate (violations, ~1%), prompts differing in how much they provoke, no seed effect;
- a continuous metric (a grade) with a prompt effect, no seed effect;
- the same with a seed effect: each training seed shifts its point's mean (sd --seed_sd), as training
  seeds do (on HH one point's win rate was 0.64 and 0.77 at two seeds).

Without a seed effect, resampling seeds counts the generation noise more than once and the intervals
are conservative; with one, resampling the prompts alone is far too narrow, and with a large one so
is resampling 2 or 3 seeds without the t correction (it cannot give a t distribution's tails).
"""

from __future__ import annotations

import argparse

import numpy as np

from upo.stats import bootstrap_means, paired_difference_draws, percentile_interval, resample_counts


def rare_rate(rng, k: int, n: int, rate: float = 0.01, seed_sd: float = 0.0):
    """Violations: the same rate for both points and every seed (`seed_sd` is not used)."""
    propensity = rng.beta(0.5, 0.5 / rate - 0.5, size=n)  # mean `rate`, most prompts near 0
    return [(rng.random((k, n)) < propensity).astype(float) for _ in range(2)]


def continuous(rng, k: int, n: int, seed_sd: float = 0.0):
    prompt = rng.normal(0, 1, size=n)
    return [prompt + rng.normal(0, seed_sd, size=(k, 1)) + rng.normal(0, 1, size=(k, n)) for _ in range(2)]


METHODS = ("upo", "without the t correction", "prompts only")


def calibration(case, reps: int, k: int, n: int, resamples: int, seed_sd: float = 0.0, seed: int = 0) -> dict:
    """{method: (share of intervals excluding 0, mean width)} for METHODS: upo's paired bootstrap
    (`upo.stats.paired_difference_draws`: prompts and seeds resampled, the seed part t-corrected), the
    same without the t correction, and the prompts alone resampled."""
    rng = np.random.default_rng(seed)
    excluded = dict.fromkeys(METHODS, 0)
    widths: dict[str, list[float]] = {name: [] for name in METHODS}
    for r in range(reps):
        a, b = case(rng, k, n, seed_sd=seed_sd)
        draw = np.random.default_rng(r)
        units = resample_counts(n, resamples, draw)
        seeds_a, seeds_b = resample_counts(k, resamples, draw), resample_counts(k, resamples, draw)
        draws = {"upo": paired_difference_draws(a, b, resamples, seed=r),
                 "without the t correction": bootstrap_means(b, units, seeds_b) - bootstrap_means(a, units, seeds_a),
                 "prompts only": bootstrap_means(b, units) - bootstrap_means(a, units)}
        for name, d in draws.items():
            low, high = percentile_interval(d)
            excluded[name] += bool(low > 0 or high < 0)
            widths[name].append(high - low)
    return {name: (excluded[name] / reps, float(np.mean(widths[name]))) for name in METHODS}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=300, help="simulated comparisons per case")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per point (k >= 2)")
    parser.add_argument("--prompts", type=int, default=384)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed_sd", type=float, default=0.1,
                        help="the seed effect's sd in the last case (the per-prompt noise has sd 1)")
    args = parser.parse_args(argv)
    cases = [("rare rate (~1%), no seed effect", rare_rate, 0.0),
             ("continuous, no seed effect", continuous, 0.0),
             (f"continuous, seed effect sd {args.seed_sd:g}", continuous, args.seed_sd)]
    print(f"{args.reps} simulated comparisons per case, {args.seeds} seeds x {args.prompts} prompts per point, "
          f"no true difference; 95% intervals\n")
    print("| case | " + " | ".join(f"excluding 0: {m}" for m in METHODS) + " | "
          + " | ".join(f"width: {m}" for m in METHODS) + " |")
    print("|---|" + "---|" * 2 * len(METHODS))
    for label, case, seed_sd in cases:
        out = calibration(case, args.reps, args.seeds, args.prompts, args.resamples, seed_sd)
        print(f"| {label} | " + " | ".join(f"{out[m][0]:.3f}" for m in METHODS) + " | "
              + " | ".join(f"{out[m][1]:.4g}" for m in METHODS) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
