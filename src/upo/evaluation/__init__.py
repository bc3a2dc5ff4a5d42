"""`upo eval`: generate on held-out prompts and measure preference alignment and the auxiliary objectives.

config.py (EvalConfig), heldout.py (which rows, prompts fitted to the model's context), metrics.py
(pure metric functions and each metric's better direction), implicit.py (implicit-reward accuracy
on held-out pairs), eval.py (the run), report.py (the Markdown table).
"""
