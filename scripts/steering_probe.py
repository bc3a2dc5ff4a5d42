"""How far apart does a steered policy hold two of its conditions? And two grid-trained models?

Scores the dataset's chosen and rejected responses to its first single-turn prompts (up to 64
response tokens) and reports, between two conditions of one steered model (or between two models):
the mean absolute difference of the responses' per-token log-probs, the KL divergence of the first
response token's distribution (over the vocabulary both share), and each side's mean chosen - rejected margin (per-token log-probs).
A steered model whose conditions differ far less than the models trained at those values cannot
steer. Used for README "Steered UPO" (the first attempt, and steering by adapter: the model's
adapter scaled to each condition).

    python scripts/steering_probe.py runs/.../upo-steered/seed-1/final                  # aux_coef 0 vs 3
    python scripts/steering_probe.py runs/.../upo-steered/seed-1/checkpoints/step-300   # a checkpoint
    python scripts/steering_probe.py runs/.../upo-kto-aux0/seed-1/final --against runs/.../upo-kto-aux3/seed-1/final
    python scripts/steering_probe.py runs/.../upo-steered/seed-1/final --conditions 3 3 --against runs/.../upo-kto-aux3/seed-1/final
    python scripts/steering_probe.py runs/probe-mixes/steered/final --mixes safe readable   # steered over reward mixes
    python scripts/steering_probe.py runs/probe-mixes/steered/final --mixes safe safe --against runs/probe-mixes/grid-safe/final
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from upo.config import UPOConfig
from upo.data.steering import SteeringError, add_steering_tokens, condition_token, mix_token, steering_suffix
from upo.modeling import add_lora, init_token_embeddings, load_causal_lm, load_tokenizer, resolve_model_path
from upo.steer_adapter import (
    adapter_weight,
    add_steer_adapter,
    is_adapter_steered,
    load_steered,
    set_adapter_weight,
)


def single_turn_pairs(path: str, n: int) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) of the first n HH rows with one human turn."""
    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            row = json.loads(line)
            if row["chosen"].count("Human:") != 1:
                continue
            prompt, chosen = row["chosen"].rsplit("\n\nAssistant:", 1)
            rejected = row["rejected"].rsplit("\n\nAssistant:", 1)[1]
            out.append((prompt.replace("\n\nHuman:", "").strip(), chosen.strip(), rejected.strip()))
            if len(out) == n:
                break
    return out


def load(path: Path):
    """A saved model (final/, LoRA merged) or a training checkpoint rebuilt as the trainer builds it;
    with the run's config when steered by adapter (the caller scales its adapter), else None."""
    if (path / "config.json").exists():
        by_adapter = is_adapter_steered(path)
        cfg = UPOConfig(**yaml.safe_load((path / "upo_config.yaml").read_text())) if by_adapter else None
        return AutoModelForCausalLM.from_pretrained(path).eval(), load_tokenizer(str(path)), cfg
    cfg = UPOConfig(**yaml.safe_load((path / "config.yaml").read_text()))
    if cfg.steer_reward_mixes is not None:
        raise SystemExit(f"{path}: a checkpoint of a run steered over reward mixes: probe its final/")
    model_path = resolve_model_path(cfg.model, cfg.cache_dir)
    tokenizer = load_tokenizer(model_path)
    lm = load_causal_lm(model_path)
    ids = {}
    if cfg.steer_by == "token":
        ids = add_steering_tokens(tokenizer, cfg.steer_aux_coefs)
        known = lm.get_input_embeddings().num_embeddings
        lm.resize_token_embeddings(len(tokenizer))
        if cfg.control_token_init == "text":
            init_token_embeddings(lm, tokenizer, {i: f"{c:g}" for c, i in ids.items() if i >= known})
    lm = add_lora(lm, cfg, trainable_token_ids=sorted(ids.values()) or None)
    if cfg.steer_by == "adapter":
        add_steer_adapter(lm)
    state = {k.removeprefix("lm."): v for k, v in load_file(str(path / "model.safetensors")).items() if k.startswith("lm.")}
    unexpected = lm.load_state_dict(state, strict=False).unexpected_keys
    if unexpected:
        raise SystemExit(f"{path}: checkpoint keys this model lacks, e.g. {unexpected[:3]}")
    return lm.eval(), tokenizer, cfg if cfg.steer_by == "adapter" else None


def at_condition(model, path: Path, cfg, aux_coef: float):
    """A model steered by adapter at `aux_coef`: a final/'s adapter merged at its scale, or a
    checkpoint's copy with its two adapters mixed."""
    if (path / "config.json").exists():
        return load_steered(AutoModelForCausalLM.from_pretrained(path), path, aux_coef).eval()
    model = copy.deepcopy(model)
    set_adapter_weight(model, adapter_weight(aux_coef, cfg.steer_aux_coefs))
    return model


@torch.no_grad()
def response_logps(model, tokenizer, prompt: str, response: str, suffix: str):
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False) + suffix
    p = tokenizer(text, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"][:64]
    logps = model(torch.tensor([p + r])).logits[0, len(p) - 1:-1].float().log_softmax(-1)
    return logps.gather(-1, torch.tensor(r)[:, None]).squeeze(-1), logps[0]


def probe(model: Path, against: Path | None = None, conditions=(0.0, 3.0), pairs: int = 24,
          data: str = "../shared/data/hh-rlhf/harmless-base-dev.jsonl.gz", mixes: tuple[str, str] | None = None) -> dict:
    """The figures `main` prints: {"diff", "kl", "margin_a", "margin_b", "pairs", "by_adapter"}; with `mixes`,
    between two reward mixes of a model steered over them by token (its final/), or with `against` too,
    between its first mix and the second model."""
    a, tokenizer, by_adapter = load(model)
    if mixes:
        if by_adapter:
            raise SystemExit("--mixes compares reward mixes of a model steered over them by token")
        for mix in mixes:  # one the model was trained on, and nothing else it needs (an aux_coef): else an error
            try:
                steering_suffix(tokenizer, None, mix)
            except SteeringError as e:
                raise SystemExit(f"{model}: {e}") from None
        b, suffixes = a, tuple(mix_token(m) for m in mixes)
        if against:  # the first mix against a second model, without a token
            b, suffixes = load(against)[0], (suffixes[0], "")
    elif against:  # a model steered by adapter at the first of the conditions
        a = at_condition(a, model, by_adapter, conditions[0]) if by_adapter else a
        b, suffixes = load(against)[0], ("", "")
    elif by_adapter:  # the condition is in the weights: two models
        a, b = (at_condition(a, model, by_adapter, c) for c in conditions)
        suffixes = ("", "")
    else:
        b, suffixes = a, tuple(condition_token(c) for c in conditions)
    rows = single_turn_pairs(data, pairs)
    diff = kl = margin_a = margin_b = 0.0
    for prompt, chosen, rejected in rows:
        ca, first_a = response_logps(a, tokenizer, prompt, chosen, suffixes[0])
        cb, first_b = response_logps(b, tokenizer, prompt, chosen, suffixes[1])
        ra, _ = response_logps(a, tokenizer, prompt, rejected, suffixes[0])
        rb, _ = response_logps(b, tokenizer, prompt, rejected, suffixes[1])
        diff += ((ca - cb).abs().mean() + (ra - rb).abs().mean()).item() / 2 / len(rows)
        shared = min(len(first_a), len(first_b))  # a model steered by token has its control tokens beyond
        first_a, first_b = first_a[:shared].log_softmax(-1), first_b[:shared].log_softmax(-1)
        kl += (first_a.exp() * (first_a - first_b)).sum().item() / len(rows)
        margin_a += (ca.mean() - ra.mean()).item() / len(rows)
        margin_b += (cb.mean() - rb.mean()).item() / len(rows)
    return {"diff": diff, "kl": kl, "margin_a": margin_a, "margin_b": margin_b, "pairs": len(rows),
            "by_adapter": by_adapter is not None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a steered final/ or checkpoint (or any final/ with --against)")
    parser.add_argument("--against", type=Path, help="a second model: compare the two, without condition tokens "
                        "(a model steered by adapter at the first of --conditions)")
    parser.add_argument("--conditions", type=float, nargs=2, default=[0.0, 3.0], help="the two aux_coef values")
    parser.add_argument("--mixes", nargs=2, help="two reward mixes of a model steered over them (in place of "
                        "--conditions); with --against, the first of them against the second model")
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--data", default="../shared/data/hh-rlhf/harmless-base-dev.jsonl.gz")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    r = probe(args.model, args.against, args.conditions, args.pairs, args.data, args.mixes)
    at = f" at aux_coef {args.conditions[0]:g}" if args.against and r["by_adapter"] else ""
    sides = f"{args.model}{at} vs {args.against}" if args.against else f"{args.model}: aux_coef {args.conditions[0]:g} vs {args.conditions[1]:g}"
    if args.mixes:
        sides = f"{args.model}: reward mix {args.mixes[0]} vs " + (str(args.against) if args.against else args.mixes[1])
    print(f"{sides} ({r['pairs']} single-turn pairs): mean |logp difference| per response token {r['diff']:.4f}; "
          f"KL of the first token {r['kl']:.4f}; chosen - rejected margin {r['margin_a']:.3f} vs {r['margin_b']:.3f}")


if __name__ == "__main__":
    main()
