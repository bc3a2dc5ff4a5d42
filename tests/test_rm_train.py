"""`upo rm train`: the Bradley-Terry loss by hand, and tiny-model runs that train, save and score."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from upo.cli import main
from upo.data.readers import load_records
from upo.data.records import prompt_text
from upo.modeling import load_tokenizer
from upo.rewards.resolve import resolve_reward
from upo.rm.config import ConfigError, RMConfig, load_rm_config
from upo.rm.loss import bradley_terry_loss, pair_metrics
from upo.rm.train import collate_rm, pair_rewards, tokenize_rm_pairs, train_reward_model

# ---- the loss ---------------------------------------------------------------------------------


def test_bradley_terry_loss_by_hand():
    """margins m = r_c - r_r = [0, ln 3, -ln 3]:
    -log sigmoid(0) = log 2 = 0.693147; -log sigmoid(ln 3) = -log(3/4) = 0.287682;
    -log sigmoid(-ln 3) = -log(1/4) = log 4 = 1.386294."""
    chosen = torch.tensor([1.0, math.log(3.0), 0.0])
    rejected = torch.tensor([1.0, 0.0, math.log(3.0)])
    losses = bradley_terry_loss(chosen, rejected)
    torch.testing.assert_close(losses, torch.tensor([math.log(2), -math.log(0.75), math.log(4)]))
    # only the margin matters: shifting both rewards changes nothing
    torch.testing.assert_close(bradley_terry_loss(chosen + 5.0, rejected + 5.0), losses)
    # a huge margin stays finite both ways (logsigmoid, not log(sigmoid))
    far = bradley_terry_loss(torch.tensor([200.0, -200.0]), torch.tensor([0.0, 0.0]))
    assert far[0].item() == pytest.approx(0.0, abs=1e-30) and far[1].item() == pytest.approx(200.0)


def test_bradley_terry_gradient_raises_chosen_and_lowers_rejected():
    chosen = torch.tensor([0.5, -1.0], requires_grad=True)
    rejected = torch.tensor([0.0, 2.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).sum().backward()
    # d/dr_c = -sigmoid(-(m)) = -(1 - sigmoid(m)); m = 0.5 -> -0.377541
    assert chosen.grad[0].item() == pytest.approx(-(1 - 1 / (1 + math.exp(-0.5))), abs=1e-6)
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()
    torch.testing.assert_close(rejected.grad, -chosen.grad)


def test_pair_metrics_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.0, 1.0, -1.0]), torch.tensor([1.0, 1.0, 1.0, -3.0])
    m = pair_metrics(chosen, rejected)
    assert m["rewards/accuracies"] == 0.5  # 2 > 1 and -1 > -3; 0 < 1 and the tie 1 = 1 are wrong
    assert m["rewards/margins"] == pytest.approx((1 - 1 + 0 + 2) / 4)
    assert m["rewards/chosen"] == pytest.approx(0.5) and m["rewards/rejected"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        bradley_terry_loss(chosen, rejected[:2])


# ---- config -----------------------------------------------------------------------------------


def test_rm_config_checks_values_and_keys():
    with pytest.raises(ConfigError, match="precision"):
        RMConfig(precision="fp8")
    with pytest.raises(ConfigError, match="eval_fraction"):
        RMConfig(eval_fraction=1.0)
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_rm_config(None, {"learning_rat": "1e-4"})
    cfg = load_rm_config(None, {"lora": "true", "max_steps": "3", "max_examples": "null"})
    assert cfg.lora is True and cfg.max_steps == 3 and cfg.max_examples is None


# ---- data -------------------------------------------------------------------------------------


def test_pairs_are_encoded_as_the_scorer_encodes_them(tiny_tokenizer, pairs_file):
    pairs = load_records(str(pairs_file)).records
    items, skipped = tokenize_rm_pairs(pairs, tiny_tokenizer, max_length=512)
    assert skipped == [] and len(items) == len(pairs)
    first = items[0]
    text = tiny_tokenizer.decode(first["chosen_ids"])
    # the scorer's rendering: one user turn with the prompt's text, one assistant turn with the response
    assert text == (f"<|im_start|>user\n{prompt_text(pairs[0].prompt)}<|im_end|>\n"
                    f"<|im_start|>assistant\n{pairs[0].chosen}<|im_end|>\n")
    too_long = max(len(items[0]["rejected_ids"]), len(items[0]["chosen_ids"])) - 1
    short_items, skipped = tokenize_rm_pairs(pairs[:1], tiny_tokenizer, max_length=too_long)
    assert short_items == [] and skipped == [0]

    batch = collate_rm(items[:2], pad_token_id=tiny_tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 4  # chosen rows, then rejected rows
    assert batch["attention_mask"][2].sum() == len(items[0]["rejected_ids"])
    assert batch["input_ids"][2, : len(items[0]["rejected_ids"])].tolist() == items[0]["rejected_ids"]


# ---- training runs ----------------------------------------------------------------------------


def _cfg(tiny_model_dir, pairs_file, tmp_path, **overrides) -> RMConfig:
    base = dict(model=str(tiny_model_dir), dataset=str(pairs_file), eval_fraction=0.25, batch_size=4, max_steps=3,
                learning_rate=1e-3, precision="fp32", output_dir=str(tmp_path / "rm"), progress=False,
                logging_steps=1, max_length=128, seed=0)
    base.update(overrides)
    return RMConfig(**base)


def test_tiny_run_saves_a_model_that_loads_as_an_rm_scorer(tiny_model_dir, pairs_file, tmp_path):
    final, metrics = train_reward_model(_cfg(tiny_model_dir, pairs_file, tmp_path))
    assert 0.0 <= metrics["eval/rewards/accuracies"] <= 1.0 and math.isfinite(metrics["eval/rewards/margins"])
    assert metrics["eval/pairs"] == 3 and metrics["train/pairs"] == 9 and metrics["train/steps"] == 3
    written = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert written["eval/rewards/accuracies"] == metrics["eval/rewards/accuracies"]
    rows = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(math.isfinite(r["train/loss"]) for r in rows)

    pairs = load_records(str(pairs_file)).records[:3]
    prompts = [prompt_text(p.prompt) for p in pairs]
    scores = resolve_reward(f"rm:{final}")(prompts, [p.chosen for p in pairs])
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    # the scorer reads what training computed: the same rewards from the in-memory model and batching
    model = AutoModelForSequenceClassification.from_pretrained(final).eval()
    items, _ = tokenize_rm_pairs(pairs, load_tokenizer(str(final)), max_length=128)
    with torch.no_grad():
        chosen, _ = pair_rewards(model, collate_rm(items, model.config.pad_token_id))
    assert chosen.tolist() == pytest.approx(scores, abs=1e-5)
    with pytest.raises(FileExistsError):  # never overwrite a trained model
        train_reward_model(_cfg(tiny_model_dir, pairs_file, tmp_path))


def test_gradient_checkpointing_reruns_layers_and_changes_no_update(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    from transformers.models.llama.modeling_llama import LlamaMLP

    calls, forward = [0], LlamaMLP.forward

    def counted(self, *args, **kwargs):
        calls[0] += 1
        assert not self.training  # the model's own modules stay in eval mode, as upo train's
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaMLP, "forward", counted)
    weights, counts = {}, {}
    for checkpointing in (False, True):
        calls[0] = 0
        final, _ = train_reward_model(_cfg(tiny_model_dir, pairs_file, tmp_path / str(checkpointing), eval_fraction=0.0,
                                           gradient_checkpointing=checkpointing))
        weights[checkpointing], counts[checkpointing] = load_file(str(final / "model.safetensors")), calls[0]
    assert counts[True] - counts[False] == 3 * 2  # 3 steps x 2 layers run again in backward
    assert all(torch.allclose(weights[False][k], weights[True][k], rtol=1e-5, atol=1e-7) for k in weights[False])


def test_training_learns_kind_over_rude(tiny_model_dir, pairs_file, tmp_path):
    """A few dozen steps separate the kind (chosen) answers from the rude ones, on training pairs and
    on held-out topics; the untrained head is at chance on them."""
    cfg = _cfg(tiny_model_dir, pairs_file, tmp_path, eval_fraction=0.5, max_steps=30, logging_steps=10,
               precision="bf16")
    final, metrics = train_reward_model(cfg)
    assert metrics["eval/pairs"] == 6
    assert metrics["eval/rewards/accuracies"] == 1.0 and metrics["eval/rewards/margins"] > 0.5
    assert metrics["train/rewards/accuracies"] == 1.0 and metrics["train/loss"] < 0.3
    untrained = train_reward_model(_cfg(tiny_model_dir, pairs_file, tmp_path, eval_fraction=0.5, learning_rate=1e-12,
                                        max_steps=1, output_dir=str(tmp_path / "untrained")))[1]
    assert untrained["eval/rewards/accuracies"] < 1.0 or untrained["eval/rewards/margins"] < 0.05


def test_lora_run_trains_the_score_head_and_saves_merged(tiny_model_dir, pairs_file, tmp_path):
    final, metrics = train_reward_model(_cfg(tiny_model_dir, pairs_file, tmp_path, lora=True, lora_r=4, max_steps=2))
    assert not (final / "adapter_config.json").exists()  # merged into plain weights
    weights = load_file(str(final / "model.safetensors"))
    assert "score.weight" in weights and not any("lora" in k for k in weights)
    torch.manual_seed(0)  # the seed the run used: the head as initialized, before training
    initial = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    assert not torch.allclose(weights["score.weight"], initial.score.weight)  # the head learned
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(weights[name], initial.state_dict()[name])  # and the merged adapters moved the body
    assert math.isfinite(metrics["eval/rewards/margins"])


def test_cli_rm_train(tiny_model_dir, pairs_file, tmp_path, capsys):
    out = tmp_path / "cli-rm"
    code = main(["rm", "train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--max_steps", "2",
                 "--batch_size", "4", "--precision", "fp32", "--output_dir", str(out), "--progress", "false",
                 "--max_length", "128"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out pairwise accuracy" in printed and f"rm:{out / 'final'}" in printed
    assert (out / "final" / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    assert main(["rm", "train", "--dataset", str(pairs_file), "--precision", "fp8"]) == 2  # a clear error


def test_rm_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["rm", "train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--eval_fraction" in text and "--lora" in text and "-log sigmoid" in text
