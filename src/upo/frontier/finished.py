"""`upo frontier --finished`: a report of the runs finished so far, while the sweep runs. What it
keeps of each point's finished seeds, and the warning that says what is not in it."""

from __future__ import annotations

from upo.frontier.sweep import Point


def same_seeds_per_run(points: list[Point], results: dict[str, list[dict]], done: dict[str, list]) -> None:
    """Keep, of a steered run's conditions, only the seeds at which every condition is finished: the
    conditions of one run resample their seeds alike (`upo.frontier.uncertainty`)."""
    for run in {p.trained for p in points if p.trained}:
        conditions = [p.name for p in points if p.trained == run]
        shared = set.intersection(*(set(done[name]) for name in conditions))
        for name in conditions:
            kept = [i for i, seed in enumerate(done[name]) if seed in shared]
            results[name] = [results[name][i] for i in kept]
            done[name] = [done[name][i] for i in kept]


def unfinished_warning(points: list[Point], seeds: list, done: dict[str, list], chosen: bool = False) -> str:
    """The warning of a `--finished` report: which runs it holds, and which it lacks (of the points
    chosen with --points, when `chosen`)."""
    missing = {p.name: [s for s in seeds if s not in done[p.name]] for p in points}
    missing = {name: lacking for name, lacking in missing.items() if lacking}
    if not missing:
        which = f"of the points {', '.join(p.name for p in points)} (--points)" if chosen else "of the sweep"
        return f"--finished: every run {which}" + (f" at seeds {', '.join(map(str, seeds))}" if seeds != [None] else "") \
            + " is finished and in this report"
    lacking = "; ".join(f"{name} seed {', '.join(map(str, lacking))}" if done[name] else name
                        for name, lacking in missing.items())
    single = [name for name, done_seeds in done.items() if len(done_seeds) == 1] if len(seeds) > 1 else []
    narrow = (f" Points with one finished seed ({', '.join(single)}) carry no seed variance: their intervals and "
              f"comparisons count the prompts only, narrower than they will be with more seeds." if single else "")
    return (f"--finished: a report of the runs finished so far, each point the mean over its finished seeds; "
            f"not finished, so not in it: {lacking}. The sweep's report replaces it once every run is done.{narrow}")
