"""`upo rm train`: a Bradley-Terry reward model on paired preference data.

A causal LM gets a 1-output linear head (`AutoModelForSequenceClassification`, num_labels=1) that
reads the hidden state of each text's last token. Each (prompt, response) is rendered and tokenized
exactly as the `rm:PATH` scorer does (`upo.rewards.reward_model.render`), so the saved model scores
what it was trained on. Loss: -log sigmoid(r_chosen - r_rejected) (`upo.rm.loss`).

Output folder: rm_config.yaml, metrics.jsonl (train metrics every logging_steps), metrics.json
(held-out pairwise accuracy and margins of the saved model, counts) and final/ (save_pretrained
model + tokenizer, LoRA merged), which loads as `rm:OUTPUT_DIR/final`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from upo.atomic import atomic_folder
from upo.data.collate import LengthGroupedBatchSampler
from upo.data.readers import load_records
from upo.data.records import PreferencePair, prompt_text
from upo.data.split import split_heldout
from upo.metrics import MetricsAverager, MetricsWriter
from upo.modeling import (
    check_gradient_checkpointing,
    disable_dropout,
    enable_gradient_checkpointing,
    load_tokenizer,
    resolve_model_path,
)
from upo.rewards.reward_model import adds_special_tokens, render, reward_model_scorer
from upo.rm.config import RMConfig
from upo.rm.loss import bradley_terry_loss, pair_metrics


@dataclass
class RMData:
    train_items: list[dict]  # {"index", "chosen_ids", "rejected_ids"}
    eval_pairs: list[PreferencePair]  # held-out pairs that fit max_length
    report: list[str] = field(default_factory=list)  # human lines: skipped rows and pairs


def encode(tokenizer, prompt: str, response: str) -> list[int]:
    """Token ids of the rendered (prompt, response), as the `rm:` scorer tokenizes it (untruncated)."""
    text = render(tokenizer, prompt, response)
    return list(tokenizer(text, add_special_tokens=adds_special_tokens(tokenizer))["input_ids"])


def tokenize_rm_pairs(pairs: list[PreferencePair], tokenizer, max_length: int) -> tuple[list[dict], list[int]]:
    """Items {"index", "chosen_ids", "rejected_ids"} of the pairs whose both sides fit max_length,
    and the indices of the pairs skipped. A pair is skipped rather than truncated: the scorer would
    cut a long text's end, the response, and a pair cut to the same prefix carries no signal."""
    items, skipped = [], []
    for i, pair in enumerate(pairs):
        prompt = prompt_text(pair.prompt)
        chosen, rejected = encode(tokenizer, prompt, pair.chosen), encode(tokenizer, prompt, pair.rejected)
        if max(len(chosen), len(rejected)) > max_length:
            skipped.append(i)
            continue
        items.append({"index": i, "chosen_ids": chosen, "rejected_ids": rejected})
    return items, skipped


def collate_rm(items: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """B pairs -> input_ids / attention_mask [2B, T] long, right-padded to the longest sequence;
    rows 0..B-1 are the chosen responses, B..2B-1 the rejected ones."""
    sequences = [item["chosen_ids"] for item in items] + [item["rejected_ids"] for item in items]
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)  # [2B, T]
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)  # [2B, T]
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def pair_rewards(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) rewards [B] each, float32, from a collate_rm batch."""
    rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()  # [2B]
    b = rewards.shape[0] // 2
    return rewards[:b], rewards[b:]


def split_pairs(cfg: RMConfig) -> tuple[list[PreferencePair], list[PreferencePair], list[str]]:
    """(train, held-out, report): shuffled with the seed and split as `upo train` splits, so a policy
    trained with the same eval_fraction and split seed (its split_seed, else its seed) holds out the
    same pairs."""
    if not cfg.dataset:
        raise ValueError("no dataset given: pass --dataset PATH (paired preference data)")
    result = load_records(cfg.dataset, cfg.dataset_split)
    report = [f"{cfg.dataset}: skipped {n} rows ({reason})" for reason, n in result.skipped.items() if n]
    records = list(result.records)
    if not isinstance(records[0], PreferencePair):
        raise ValueError(f"a reward model needs paired data (prompt, chosen, rejected); {cfg.dataset} is unpaired")
    eval_pairs, train_pairs = split_heldout(records, cfg.eval_fraction, cfg.seed)
    if cfg.max_examples is not None:
        train_pairs = train_pairs[: cfg.max_examples]
    if not train_pairs:
        raise ValueError(f"{cfg.dataset}: no training pairs left after splitting off the held-out pairs")
    return train_pairs, eval_pairs, report


def prepare_rm_data(cfg: RMConfig, tokenizer) -> RMData:
    train_pairs, eval_pairs, report = split_pairs(cfg)
    train_items, skipped = tokenize_rm_pairs(train_pairs, tokenizer, cfg.max_length)
    report.append(f"train: {len(train_items)} pairs, {len(skipped)} skipped (a side longer than max_length={cfg.max_length})")
    if not train_items:
        raise ValueError(f"{cfg.dataset}: every training pair is longer than max_length={cfg.max_length}")
    eval_items, eval_skipped = tokenize_rm_pairs(eval_pairs, tokenizer, cfg.max_length)
    report.append(f"held out: {len(eval_items)} pairs, {len(eval_skipped)} skipped (longer than max_length)")
    return RMData(train_items, [eval_pairs[item["index"]] for item in eval_items], report)


def load_reward_model(path: str, tokenizer, cfg: RMConfig):
    """The causal LM at `path` with a fresh 1-output score head (seeded), dropout off, LoRA on request."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(cfg.seed)  # the score head's initialization
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id  # how the head finds each row's last token
    disable_dropout(model)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        # the new score head must learn in full: LoRA alone would leave it at its random init
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear",
                          task_type="SEQ_CLS", modules_to_save=["score"])
        model = get_peft_model(model, lora)
    return model


def evaluate_saved(final: Path, pairs: list[PreferencePair], max_length: int, progress: bool = False) -> dict[str, float]:
    """Held-out metrics of the saved model, through the `rm:` scorer that will read it."""
    if not pairs:
        return {}
    score = reward_model_scorer(str(final), max_length=max_length, progress=progress, desc="held-out eval")
    prompts = [prompt_text(p.prompt) for p in pairs]
    chosen = torch.tensor(score(prompts, [p.chosen for p in pairs]))  # [n]
    rejected = torch.tensor(score(prompts, [p.rejected for p in pairs]))  # [n]
    metrics = {f"eval/{k}": v for k, v in pair_metrics(chosen, rejected).items()}
    metrics["eval/loss"] = bradley_terry_loss(chosen, rejected).mean().item()
    metrics["eval/pairs"] = len(pairs)
    return metrics


def _save(model, tokenizer, cfg: RMConfig, out: Path) -> Path:
    """final/: save_pretrained model (LoRA merged) + tokenizer + rm_config.yaml, written atomically."""
    final = out / "final"
    if cfg.lora:
        model = model.merge_and_unload()
    with atomic_folder(final) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        cfg.save(tmp / "rm_config.yaml")
    return final


def train_reward_model(cfg: RMConfig) -> tuple[Path, dict[str, float]]:
    """Train according to `cfg`; returns the final/ folder and the metrics written to metrics.json."""
    model_path = resolve_model_path(cfg.model, cfg.cache_dir, progress=cfg.progress)
    out = Path(cfg.output_dir)
    if (out / "final").exists():
        raise FileExistsError(f"{out} already holds a reward model (final/); choose another --output_dir")
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "rm_config.yaml")
    log = tqdm.write

    if cfg.gradient_checkpointing:
        check_gradient_checkpointing(model_path, "sequence-classification")  # before the data is read
    tokenizer = load_tokenizer(model_path)
    tokenizer.padding_side = "right"
    data = prepare_rm_data(cfg, tokenizer)
    for line in data.report:
        log(f"upo rm: {line}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # its own modules stay in eval mode, as upo train's policy (upo.modeling.enable_gradient_checkpointing)
    model = load_reward_model(model_path, tokenizer, cfg).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    lengths = [max(len(i["chosen_ids"]), len(i["rejected_ids"])) for i in data.train_items]
    sampler = LengthGroupedBatchSampler(lengths, cfg.batch_size, seed=cfg.seed, group_by_length=cfg.group_by_length)
    total_steps = cfg.max_steps or len(sampler) * cfg.num_epochs
    writer = MetricsWriter(out / "metrics.jsonl")
    averager, last_logged = MetricsAverager(), {}
    bar = tqdm(total=total_steps, desc="reward model", disable=not cfg.progress, dynamic_ncols=True)
    step, epoch, start = 0, 0, time.perf_counter()
    while step < total_steps:
        sampler.set_epoch(epoch)
        for seen, indices in enumerate(sampler, 1):
            items = [data.train_items[i] for i in indices]
            batch = {k: v.to(device) for k, v in collate_rm(items, tokenizer.pad_token_id).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                chosen, rejected = pair_rewards(model, batch)  # [B] each
            loss = bradley_terry_loss(chosen, rejected).mean()
            if not torch.isfinite(loss):
                rows = [data.train_items[i]["index"] for i in indices]
                raise FloatingPointError(f"non-finite loss ({loss.item()}) at step {step + 1} (training pairs {rows})")
            loss.backward()
            metrics = {"loss": loss.item(), **pair_metrics(chosen, rejected)}
            if cfg.max_grad_norm:
                metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            averager.add(metrics, weight=len(indices))
            step += 1
            bar.update(1)
            if step % cfg.logging_steps == 0 or step == total_steps:
                last_logged = {f"train/{k}": v for k, v in averager.pop().items()}
                last_logged["train/epoch"] = epoch + seen / len(sampler)
                writer.write(step, last_logged)
                bar.set_postfix(loss=f"{last_logged['train/loss']:.4f}",
                                acc=f"{last_logged['train/rewards/accuracies']:.2f}")
            if step >= total_steps:
                break
        epoch += 1
    bar.close()
    train_seconds = time.perf_counter() - start

    final = _save(model, tokenizer, cfg, out)
    del model, optimizer, trainable  # the scorer loads its own copy from final/
    metrics = {
        **evaluate_saved(final, data.eval_pairs, cfg.max_length, progress=cfg.progress),
        **last_logged,
        "train/pairs": len(data.train_items),
        "train/steps": step,
        "train/seconds": train_seconds,
    }
    (out / "metrics.json").write_text(json.dumps({k: v if math.isfinite(v) else str(v) for k, v in metrics.items()},
                                                 indent=2) + "\n")
    return final, metrics


def format_rm_metrics(final: Path, metrics: dict[str, float]) -> str:
    """The lines `upo rm train` prints at the end."""
    lines = []
    if "eval/pairs" in metrics:
        lines.append(
            f"upo rm: held-out pairwise accuracy {metrics['eval/rewards/accuracies']:.3f} "
            f"({int(metrics['eval/pairs'])} pairs), mean margin {metrics['eval/rewards/margins']:.3f}, "
            f"loss {metrics['eval/loss']:.4f}"
        )
    else:
        lines.append("upo rm: no held-out pairs (eval_fraction 0), so no held-out accuracy")
    lines.append(f"upo rm: model saved to {final}; score with rm:{final}")
    return "\n".join(lines)
