"""`upo frontier`: trace preference alignment against the auxiliary objectives across methods and weights.

sweep.py (SWEEP.yaml -> points), run.py (train + evaluate each point, resumable), pareto.py (Pareto
fronts, dominated share, hypervolume: pure functions), summary.py (how far UPO lies beyond the
preference-only front), plot.py (PNG per auxiliary metric), report.py (frontier.csv, report.md).
"""
