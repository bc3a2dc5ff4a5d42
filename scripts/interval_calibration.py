"""How often the frontier's paired intervals exclude 0 when two points do not differ (simulated).

    python scripts/interval_calibration.py               # 300 simulated sweeps per case, ~2 min
    python scripts/interval_calibration.py --reps 1000 --seeds 3
    python scripts/interval_calibration.py --equal_length --reps 150   # the equal-length comparisons, ~5 min

Each simulated comparison is two points evaluated on the same n prompts with k training seeds each,
whose true means are equal. It is bootstrapped as `upo frontier` and `upo compare` do
(`upo.stats.paired_difference_draws`: prompts resampled once for both points, each point's seeds on
their own, the seed part scaled by sqrt(k / (k - 1)) and then set by `seed_t_scale`: the seed
variance net of the generation noise that the prompts' resampling already counts, and an interval
t(nu) standard deviations wide on each side, nu Satterthwaite's), and, for contrast, three older or
simpler ways: the t correction on the seed part's whole spread (what upo did until 2026-11-30 14:00 UTC:
t(nu) of the seed part's own standard deviation, nu Welch-Satterthwaite's of the seed means, the
generation noise counted twice), the seed part not corrected at all, and the prompts alone
resampled. Reported per case: the share of the 95% intervals that exclude 0 (a false "better"; 0.05
is nominal) and their mean width. The cases:

- a rare rate (violations, ~1%), prompts differing in how much they provoke, no seed effect;
- a continuous metric (a grade) with a prompt effect, no seed effect;
- the same with a seed effect: each training seed shifts its point's mean (sd --seed_sd, one case
  per value), as training seeds do (on HH one point's win rate was 0.64 and 0.77 at two seeds). At
  384 prompts a seed's mean carries generation noise of sd 1 / sqrt(384) = 0.05 in these units.

Without a seed effect, resampling seeds counts the generation noise a second time, and the t
correction on their whole spread made that worse; with one, resampling the prompts alone is far too
narrow, and with a large one so is resampling 2 or 3 seeds without the t correction (it cannot give
a t distribution's tails).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import t as student_t

from upo.stats import bootstrap_mean_parts, paired_difference_draws, percentile_interval, resample_counts


def rare_rate(rng, k: int, n: int, rate: float = 0.01, seed_sd: float = 0.0):
    """Violations: the same rate for both points and every seed (`seed_sd` is not used)."""
    propensity = rng.beta(0.5, 0.5 / rate - 0.5, size=n)  # mean `rate`, most prompts near 0
    return [(rng.random((k, n)) < propensity).astype(float) for _ in range(2)]


def continuous(rng, k: int, n: int, seed_sd: float = 0.0):
    prompt = rng.normal(0, 1, size=n)
    return [prompt + rng.normal(0, seed_sd, size=(k, 1)) + rng.normal(0, 1, size=(k, n)) for _ in range(2)]


METHODS = ("upo", "t on the whole seed spread", "without the t correction", "prompts only")


def whole_spread_scale(departure: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """upo's seed correction until 2026-11-30 14:00 UTC: the seed part's 95% reach made t(nu) of its own standard
    deviation, nu Welch-Satterthwaite's of the two points' seed-mean variances (noise included)."""
    v = [np.var(x.mean(axis=1), ddof=1) / len(x) for x in (a, b)]
    nu = sum(v) ** 2 / sum(x ** 2 / (len(a) - 1) for x in v) if sum(v) > 0 else len(a) - 1
    reach = np.quantile(np.abs(departure), 0.95)
    return float(student_t.ppf(0.975, nu) * departure.std() / reach) if reach > 0 else 1.0


def calibration(case, reps: int, k: int, n: int, resamples: int, seed_sd: float = 0.0, seed: int = 0) -> dict:
    """{method: (share of intervals excluding 0, mean width)} for METHODS: upo's paired bootstrap
    (`upo.stats.paired_difference_draws`), its seed part set as until 2026-11-30 14:00 UTC, not corrected, and
    the prompts alone resampled."""
    rng = np.random.default_rng(seed)
    excluded = dict.fromkeys(METHODS, 0)
    widths: dict[str, list[float]] = {name: [] for name in METHODS}
    for r in range(reps):
        a, b = case(rng, k, n, seed_sd=seed_sd)
        draw = np.random.default_rng(r)
        units = resample_counts(n, resamples, draw)
        seeds_a, seeds_b = resample_counts(k, resamples, draw), resample_counts(k, resamples, draw)
        (every_a, departure_a), (every_b, departure_b) = (bootstrap_mean_parts(x, units, c)
                                                          for x, c in ((a, seeds_a), (b, seeds_b)))
        every, departure = every_b - every_a, departure_b - departure_a
        draws = {"upo": paired_difference_draws(a, b, resamples, seed=r),
                 "t on the whole seed spread": every + whole_spread_scale(departure, a, b) * departure,
                 "without the t correction": every + departure,
                 "prompts only": every}
        for name, d in draws.items():
            low, high = percentile_interval(d)
            excluded[name] += bool(low > 0 or high < 0)
            widths[name].append(high - low)
    return {name: (excluded[name] / reps, float(np.mean(widths[name]))) for name in METHODS}


def equal_length_calibration(reps: int, k: int, n: int, resamples: int, seed_sd: float = 0.0,
                             rate: bool = False, shift: float = 0.0, seed: int = 0) -> tuple[float, float]:
    """(share of intervals excluding 0, mean width) of upo's equal-length comparison
    (`upo.evaluation.length_matched.length_matched_difference`) of two points with equal true means
    whose values grow with log2 length (slope 0.5) and whose lengths are lognormal (B's `shift` longer
    in log: less overlap): a prompt effect, a seed effect (`seed_sd`), noise of sd 1; `rate`: a 0/1
    outcome of that value (a logistic link, ~10% events)."""
    from upo.evaluation.length_matched import length_matched_difference

    rng = np.random.default_rng(seed)
    excluded, widths = 0, []
    for r in range(reps):
        prompt = rng.normal(0, 1, n)
        sides = []
        for side in range(2):
            words = np.maximum(1, np.round(np.exp(rng.normal(3 + side * shift, 0.7, (k, n)))))
            value = prompt + rng.normal(0, seed_sd, (k, 1)) + 0.5 * np.log2(words) + rng.normal(0, 1, (k, n))
            if rate:
                value = (rng.random((k, n)) < 1 / (1 + np.exp(-(value - 6)))).astype(float)
            sides += [value, words]
        out = length_matched_difference(*sides, resamples=resamples, seed=r)
        excluded += bool(out["low"] > 0 or out["high"] < 0)
        widths.append(out["high"] - out["low"])
    return excluded / reps, float(np.mean(widths))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=300, help="simulated comparisons per case")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per point (k >= 2)")
    parser.add_argument("--prompts", type=int, default=384)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed_sd", type=float, nargs="+", default=[0.05, 0.2],
                        help="the seed effect's sd in the last cases, one case each (the per-prompt noise has sd 1)")
    parser.add_argument("--equal_length", action="store_true",
                        help="the equal-length comparisons instead (upo's alone: lengths that overlap, or "
                             "B's twice as long in log, values growing with length)")
    args = parser.parse_args(argv)
    if args.equal_length:
        print(f"{args.reps} simulated equal-length comparisons per case, {args.seeds} seeds x {args.prompts} "
              f"prompts per point, no true difference; 95% intervals\n")
        print("| case | excluding 0 | width |\n|---|---|---|")
        cases = [("continuous, no seed effect", {}), ("a 0/1 rate (~10%), no seed effect", {"rate": True})]
        cases += [(f"continuous, seed effect sd {sd:g}", {"seed_sd": sd}) for sd in args.seed_sd]
        cases += [(f"continuous, seed effect sd {args.seed_sd[0]:g}, B longer (little overlap)",
                   {"seed_sd": args.seed_sd[0], "shift": 2.0})]
        for label, kwargs in cases:
            share, width = equal_length_calibration(args.reps, args.seeds, args.prompts, args.resamples, **kwargs)
            print(f"| {label} | {share:.3f} | {width:.4g} |")
        return 0
    cases = [("rare rate (~1%), no seed effect", rare_rate, 0.0), ("continuous, no seed effect", continuous, 0.0)]
    cases += [(f"continuous, seed effect sd {sd:g}", continuous, sd) for sd in args.seed_sd]
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
