"""How many of an evaluation's generations were cut off by max_new_tokens.

    python scripts/truncation.py runs/frontier-hh-seeds/points/*/seed-*

For each `upo eval` folder (eval.json and generations.jsonl): the share of responses that reach
max_new_tokens (`upo.generation.reached_limit`: re-tokenized with the evaluated model's tokenizer,
at least max_new_tokens - 1 tokens; `upo eval` warns when a fifth or more are cut),
with its 95% Wilson interval, and the share that does not end in sentence punctuation. A judge that
compares a cut-off response with a complete reference, and a reading grade computed on a cut-off
last sentence, measure the cut as well as the policy: compare points on these before reading their
win rates and grades.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from upo.generation import reached_limit
from upo.modeling import load_tokenizer, resolve_model_path
from upo.stats import wilson_interval

ENDINGS = (".", "!", "?", '"', "'", ")")


def truncation(folder: Path) -> dict:
    """{"folder", "n", "cut", "cut_interval", "unended"} of one eval folder."""
    settings = json.loads((folder / "eval.json").read_text())["settings"]
    rows = [json.loads(line) for line in (folder / "generations.jsonl").read_text().splitlines() if line.strip()]
    tokenizer = load_tokenizer(resolve_model_path(settings["model"], None))
    limit = settings["max_new_tokens"]
    cut = sum(reached_limit(tokenizer, [r["response"] for r in rows], limit))
    return {"folder": str(folder), "n": len(rows), "cut": cut / len(rows), "cut_interval": wilson_interval(cut, len(rows)),
            "unended": sum(not r["response"].rstrip().endswith(ENDINGS) for r in rows) / len(rows),
            "max_new_tokens": limit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="upo eval output folders")
    args = parser.parse_args(argv)
    print("| eval folder | generations | cut at max_new_tokens | 95% | not ending a sentence |")
    print("|---|---|---|---|---|")
    for folder in args.folders:
        if not ((folder / "generations.jsonl").exists() and (folder / "eval.json").exists()):
            print(f"{folder}: not an evaluated folder (no eval.json and generations.jsonl), skipped", file=sys.stderr)
            continue
        t = truncation(folder)
        low, high = t["cut_interval"]
        print(f"| {folder} | {t['n']} | {t['cut']:.3f} (of {t['max_new_tokens']} tokens) | [{low:.3f}, {high:.3f}] "
              f"| {t['unended']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
