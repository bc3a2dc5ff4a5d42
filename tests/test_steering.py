"""Steered UPO (`steer_aux_coefs`): the loss with per-example aux_coef by hand, the condition draw,
the condition tokens in training, generation and evaluation, the error that lists the trained
values, LoRA training the tokens' embeddings, and the reference log-probs computed without them."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter

import pytest
import torch
from helpers import deterministic, run_config, t
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from upo.cli import main
from upo.config import ConfigError, UPOConfig, coerce
from upo.data.collate import collate_pairs, collate_unpaired
from upo.data.steering import (
    ConditionedItems,
    SteeringError,
    add_steering_tokens,
    condition_offsets,
    condition_token,
    read_steering,
    steering_conditions,
    steering_suffix,
    steering_token_ids,
)
from upo.data.tokenize import encode_prompt
from upo.evaluation.config import EvalConfig
from upo.evaluation.eval import run_eval
from upo.generation import _prompt_ids
from upo.losses import upo_loss
from upo.metrics import read_metrics
from upo.trainer import train

PROMPT = [{"role": "user", "content": "Tell me about tea."}]
COEFS = [0.0, 0.3, 1.0, 3.0]


@pytest.fixture
def steered_tokenizer(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    add_steering_tokens(tokenizer, COEFS)
    return tokenizer


# ---- the loss -----------------------------------------------------------------------------------


def test_upo_loss_with_per_example_aux_coef_hand_worked():
    """Two responses, rewards (1, 0), values 0, eta 1: weights (e, 1); logps (-1, -2), so the
    per-response aux terms -w * logp are (e, 2). Preference losses (0.2, 0.4): mean 0.3.
    aux_coef (0, 3): policy loss = 0.3 + (0 * e + 3 * 2) / 2 = 3.3; aux_loss stays the plain
    mean (e + 2) / 2. Value loss, tau 0.5: mean(0.5 * (1, 0)) = 0.25."""
    kwargs = dict(eta=1.0, max_weight=20.0, tau=0.5)
    logps = t(-1.0, -2.0, requires_grad=True)
    out = upo_loss(t(0.2, 0.4), logps, t(1.0, 0.0), t(0.0, 0.0), aux_coef=t(0.0, 3.0), **kwargs)
    assert out.policy_loss.item() == pytest.approx(3.3)
    assert out.aux_loss.item() == pytest.approx((math.e + 2) / 2)
    assert out.loss.item() == pytest.approx(3.3 + 0.25)
    out.loss.backward()  # d/dlogp of mean(c * -w * logp) = -c * w / 2: (0, -1.5)
    assert logps.grad.tolist() == pytest.approx([0.0, -1.5])


def test_per_example_aux_coef_is_the_mean_of_each_examples_upo_loss():
    """A batch whose examples carry their own aux_coef has the mean of the losses each would have
    alone at its aux_coef, gradients included; a constant tensor equals the scalar."""
    kwargs = dict(eta=0.7, max_weight=5.0, tau=0.7)
    pref, rewards, values = t(0.5, 0.1, 0.9), t(0.3, -1.2, 2.0), t(0.1, 0.2, -0.4)
    coefs = [0.0, 0.3, 3.0]
    batch_logps = t(-1.5, -0.4, -2.2, requires_grad=True)
    batch = upo_loss(pref, batch_logps, rewards, values, aux_coef=torch.tensor(coefs), **kwargs)
    batch.loss.backward()
    alone_logps = t(-1.5, -0.4, -2.2, requires_grad=True)
    alone = [upo_loss(pref[i : i + 1], alone_logps[i : i + 1], rewards[i : i + 1], values[i : i + 1], aux_coef=c,
                      **kwargs).loss for i, c in enumerate(coefs)]
    torch.stack(alone).mean().backward()
    assert batch.loss.item() == pytest.approx(torch.stack(alone).mean().item())
    assert torch.allclose(batch_logps.grad, alone_logps.grad)
    scalar = upo_loss(pref, batch_logps, rewards, values, aux_coef=0.3, **kwargs)
    constant = upo_loss(pref, batch_logps, rewards, values, aux_coef=torch.full((3,), 0.3), **kwargs)
    assert constant.loss.item() == pytest.approx(scalar.loss.item())


# ---- the conditions: tokens and draw ------------------------------------------------------------


def test_condition_tokens_are_special_and_found_again(tiny_tokenizer, steered_tokenizer):
    assert condition_token(0.3) == "<|aux_coef=0.3|>" and condition_token(3.0) == "<|aux_coef=3|>"
    ids = steering_token_ids(steered_tokenizer)
    assert list(ids) == COEFS and len(set(ids.values())) == 4
    assert len(steered_tokenizer) == len(tiny_tokenizer) + 4
    assert add_steering_tokens(steered_tokenizer, COEFS) == ids and len(steered_tokenizer) == len(tiny_tokenizer) + 4
    assert steering_token_ids(tiny_tokenizer) == {}
    # a response that mentions the text is not turned into the token; decoding skips it
    assert steered_tokenizer.decode([ids[0.3]], skip_special_tokens=True) == ""


def test_generation_picks_a_trained_condition_or_says_which_exist(tiny_tokenizer, steered_tokenizer):
    ids = steering_token_ids(steered_tokenizer)
    assert _prompt_ids(steered_tokenizer, PROMPT, 0.3) == encode_prompt(PROMPT, steered_tokenizer) + [ids[0.3]]
    assert steering_suffix(steered_tokenizer, 3) == [ids[3.0]]  # an int names the same value
    with pytest.raises(SteeringError, match=r"aux_coef 0.5 is not one this model was trained on; trained values: "
                                            r"0, 0.3, 1, 3"):
        _prompt_ids(steered_tokenizer, PROMPT, 0.5)
    with pytest.raises(SteeringError, match="trained steered: choose .* one of 0, 0.3, 1, 3"):
        _prompt_ids(steered_tokenizer, PROMPT)
    with pytest.raises(SteeringError, match=r"not trained steered by token .* steered by adapter "
                                            r".*upo eval --aux_coef., or .*load_steered\(model, folder, aux_coef\)"):
        _prompt_ids(tiny_tokenizer, PROMPT, 0.3)
    assert _prompt_ids(tiny_tokenizer, PROMPT) == encode_prompt(PROMPT, tiny_tokenizer)
    # the README's recipe for plain transformers: the chat template's text + the token's text
    text = steered_tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    readme = steered_tokenizer(text + "<|aux_coef=0.3|>", add_special_tokens=False)["input_ids"]
    assert readme == _prompt_ids(steered_tokenizer, PROMPT, 0.3)


def test_held_out_log_probs_of_a_steered_model_keep_the_references_tokens(tiny_tokenizer, steered_tokenizer,
                                                                          monkeypatch):
    """`upo eval`'s implicit rewards: a steered model's pair is the reference's (truncated at the same
    lengths, token for token) with the condition token after the prompt."""
    from upo.data.records import PreferencePair
    from upo.evaluation import implicit

    seen = []
    monkeypatch.setattr(implicit, "item_logps", lambda items, *a, **k: seen.append(items) or
                        [{"chosen_logps": 0.0, "rejected_logps": 0.0} for _ in items])
    pair = PreferencePair(prompt=PROMPT, chosen="Green tea is mild. " * 20, rejected="No.", source="t")
    model = torch.nn.Module()  # item_logps, which would run it, is replaced
    model.device = torch.device("cpu")
    for tokenizer, aux_coef in ((tiny_tokenizer, None), (steered_tokenizer, 0.3)):  # the reference's, the policy's
        implicit.pair_logps(model, tokenizer, [pair], max_length=40, max_prompt_length=20, aux_coef=aux_coef,
                            progress=False)
    reference, steered = seen[0][0], seen[1][0]
    assert len(reference["prompt_ids"]) + len(reference["chosen_ids"]) == 40  # truncated
    token = steering_token_ids(steered_tokenizer)[0.3]
    assert steered["prompt_ids"] == reference["prompt_ids"] + [token]
    assert (steered["chosen_ids"], steered["rejected_ids"]) == (reference["chosen_ids"], reference["rejected_ids"])


def test_condition_draw_is_balanced_seeded_and_rotates_each_epoch():
    items = [{"index": i, "prompt_ids": [7, i], "completion_ids": [1]} for i in range(10)]
    conditions = steering_conditions({0.0: 100, 0.3: 101, 1.0: 102, 3.0: 103}, None)
    data = ConditionedItems(items, conditions, seed=3)
    first = [data.condition(k) for k in range(10)]
    assert sorted(Counter(first).values()) == [2, 2, 3, 3]  # every condition, shares within one example
    assert first == ConditionedItems(items, conditions, seed=3).offsets.tolist()  # the seed fixes it
    assert first != condition_offsets(10, 4, seed=4).tolist()
    seen = [set() for _ in items]
    for epoch in range(4):
        data.set_epoch(epoch)
        for k in range(10):
            item = data[k]
            c = (first[k] + epoch) % 4  # each epoch moves an example on to the next condition
            assert item["aux_coef"] == COEFS[c] and item["prompt_ids"] == [7, k, 100 + c]
            seen[k].add(c)
    assert all(s == {0, 1, 2, 3} for s in seen)  # four epochs: each example under every condition
    assert items[0]["prompt_ids"] == [7, 0] and "aux_coef" not in items[0]  # the items are not changed


def test_batches_carry_each_examples_aux_coef():
    pairs = [{"index": i, "prompt_ids": [5, 6], "chosen_ids": [1], "rejected_ids": [2, 3], "aux_coef": c}
             for i, c in enumerate([0.3, 3.0])]
    assert collate_pairs(pairs, 0)["aux_coef"].tolist() == pytest.approx([0.3, 3.0, 0.3, 3.0])  # chosen, rejected
    unpaired = [{"index": i, "prompt_ids": [5], "completion_ids": [1], "label": True, "kl_completion_ids": [2],
                 "aux_coef": c} for i, c in enumerate([1.0, 0.0])]
    assert collate_unpaired(unpaired, 0)["aux_coef"].tolist() == [1.0, 0.0]
    assert "aux_coef" not in collate_unpaired([{k: v for k, v in u.items() if k != "aux_coef"} for u in unpaired], 0)


def test_steering_config_is_checked():
    cfg = UPOConfig(steer_aux_coefs=[0, 1])
    assert cfg.steer_aux_coefs == [0.0, 1.0]
    assert coerce("steer_aux_coefs", "0,0.3,1,3") == COEFS
    with pytest.raises(ConfigError, match="method 'dpo' cannot be steered; use upo"):
        UPOConfig(method="dpo", steer_aux_coefs=[1.0])
    with pytest.raises(ConfigError, match="distinct finite numbers >= 0"):
        UPOConfig(steer_aux_coefs=[1.0, 1.0])
    with pytest.raises(ConfigError, match="aux_coef \\(steer_aux_coefs gives every example its own\\)"):
        UPOConfig(steer_aux_coefs=[1.0], aux_coef=2.0)
    with pytest.raises(ConfigError, match="precompute_ref_logps: true"):
        UPOConfig(steer_aux_coefs=[1.0], precompute_ref_logps=False)
    with pytest.raises(ConfigError, match="control_token_init"):
        UPOConfig(steer_aux_coefs=[1.0], control_token_init="random")


# ---- training and evaluation end to end ---------------------------------------------------------


STARTED_EMBEDDINGS = {}  # a steered run's final/ -> its embeddings when LoRA was added


@pytest.fixture(scope="module")
def steered_run(tiny_model_dir, pairs_file, tmp_path_factory):
    """A tiny steered UPO run (KTO term, LoRA) and the same run unsteered, 3 steps each; the
    reference is the tiny model itself (its vocabulary without the condition tokens)."""
    from upo import policy_lm as trainer  # where the trainer sets its model up (add_lora)

    tmp = tmp_path_factory.mktemp("steered")
    keys = dict(lora=True, lora_r=4, max_steps=3, ref_model=str(tiny_model_dir),
                max_length=128, max_prompt_length=64)  # nothing truncated: both runs tokenize alike
    started = []  # the embeddings as LoRA receives them: resized, the new rows initialized
    add_lora = trainer.add_lora
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "add_lora", lambda lm, *a, **k: started.append(
            lm.get_input_embeddings().weight.detach().clone()) or add_lora(lm, *a, **k))
        steered = train(run_config(tiny_model_dir, pairs_file, tmp / "steered", steer_aux_coefs=[0.3, 1.0, 3.0],
                                   **keys))
    plain = train(run_config(tiny_model_dir, pairs_file, tmp / "plain", **keys))
    STARTED_EMBEDDINGS[steered] = started[0]
    return steered, plain


def test_steered_training_records_its_conditions_and_trains_their_embeddings(steered_run, tiny_model_dir):
    final, _ = steered_run
    assert read_steering(final) == [0.3, 1.0, 3.0]
    assert json.loads((final / "steering.json").read_text())["tokens"]["0.3"] == "<|aux_coef=0.3|>"
    tokenizer = AutoTokenizer.from_pretrained(final)
    ids = steering_token_ids(tokenizer)
    assert list(ids) == [0.3, 1.0, 3.0], "the saved tokenizer lost the condition tokens"
    embeddings = AutoModelForCausalLM.from_pretrained(final).get_input_embeddings().weight  # LoRA merged
    old = load_file(str(tiny_model_dir / "model.safetensors"))["model.embed_tokens.weight"]
    for token_id in ids.values():  # LoRA trains just the new rows
        assert not torch.allclose(embeddings[token_id], STARTED_EMBEDDINGS[final][token_id]), "condition token did not train"
    assert torch.equal(embeddings[: old.shape[0]], old)
    rows = read_metrics(final.parent / "metrics.jsonl")
    assert all(0.3 <= r["train/upo/aux_coef_mean"] <= 3.0 for r in rows if "train/loss" in r)
    assert all(r["train/step_tokens"] > 0 for r in rows if "train/loss" in r)


def test_condition_tokens_start_from_the_embedding_of_their_text(steered_run, tiny_model_dir):
    """control_token_init "text" (the default): each new row starts as the mean embedding of its value's
    text ("0.3" -> its tokens), so the conditions start apart; transformers' resize alone puts them all
    at (nearly) the vocabulary's mean."""
    final, _ = steered_run
    tokenizer = AutoTokenizer.from_pretrained(final)
    old = load_file(str(tiny_model_dir / "model.safetensors"))["model.embed_tokens.weight"].float()
    started = STARTED_EMBEDDINGS[final]
    ids = steering_token_ids(tokenizer)
    for coef, token_id in ids.items():
        text_ids = tokenizer(f"{coef:g}", add_special_tokens=False)["input_ids"]
        assert torch.allclose(started[token_id], old[text_ids].mean(dim=0))
    rows = started[list(ids.values())]
    apart = torch.cdist(rows, rows)[~torch.eye(len(ids), dtype=torch.bool)]
    assert apart.min() > 0.1 * old.norm(dim=1).mean()  # mean-resized rows: ~0 apart


def test_init_token_embeddings_refuses_a_text_without_vocabulary_tokens(tiny_model_dir, steered_tokenizer):
    from upo.modeling import init_token_embeddings

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(steered_tokenizer))
    token = steering_token_ids(steered_tokenizer)[0.3]
    with pytest.raises(ValueError, match="has no tokens of the vocabulary"):
        init_token_embeddings(model, steered_tokenizer, {token: ""})
    with pytest.raises(ValueError, match="has no tokens of the vocabulary"):  # its own token is no text
        init_token_embeddings(model, steered_tokenizer, {token: condition_token(0.3)})


def test_reference_log_probs_do_not_see_the_condition(steered_run):
    """Computed once, from the prompts without the token: the same as an unsteered run's (a token in
    the reference's input would also be out of its vocabulary)."""
    steered, plain = steered_run
    a = load_file(str(steered.parent / "reference_logps.safetensors"))
    b = load_file(str(plain.parent / "reference_logps.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_upo_eval_generates_at_the_chosen_condition(steered_run, tiny_model_dir, pairs_file, tmp_path, capsys):
    final, _ = steered_run
    cfg = dict(model=str(final), data=str(pairs_file), eval_fraction=0.25, prompts=2, max_new_tokens=4,
               scorers=["length_words"], ref_model=str(tiny_model_dir),
               precision="fp32", max_length=96, max_prompt_length=32, progress=False, cache_dir=str(tmp_path / "c"))
    with pytest.raises(SteeringError, match="trained values: 0.3, 1, 3"):
        run_eval(EvalConfig(**cfg, aux_coef=0.5, output=str(tmp_path / "bad")))
    assert not (tmp_path / "bad" / "eval.json").exists()
    code = main(["eval", "--model", str(final), "--data", str(pairs_file), "--eval_fraction", "0.25", "--aux_coef",
                 "0.5", "--progress", "false", "--output", str(tmp_path / "cli")])  # one line, exit 2
    assert code == 2 and capsys.readouterr().err.strip().splitlines()[-1] == (
        "upo: error: aux_coef 0.5 is not one this model was trained on; trained values: 0.3, 1, 3")
    results = {c: run_eval(EvalConfig(**cfg, aux_coef=c, output=str(tmp_path / f"aux{c}"))) for c in (0.3, 3.0)}
    assert results[0.3]["settings"]["aux_coef"] == 0.3 and results[0.3]["counts"]["generations"] == 2
    # the condition is in the input: the held-out pairs' log-probs (hence implicit rewards) differ
    assert results[0.3]["metrics"]["logps/chosen"] != results[3.0]["metrics"]["logps/chosen"]
    assert "aux_coef" not in EvalConfig().settings()  # unsteered evaluations keep their settings


@pytest.mark.parametrize("lora", [False, True])
def test_a_resumed_steered_run_matches_the_uninterrupted_one(tiny_model_dir, pairs_file, tmp_path, lora):
    """9 training pairs = 18 unpaired examples = 5 steps of 4 per epoch: 7 steps cross into epoch 1,
    where every example has moved on to its next condition; a run stopped at step 3 and resumed
    gives every example the condition it had, so the weights and metrics are the uninterrupted run's.
    With LoRA (merged at the end) the checkpoint holds the trained parameters only, token rows included."""
    keys = dict(steer_aux_coefs=[0.0, 1.0, 3.0], batch_size=4, save_steps=3, eval_steps=None,
                **(dict(lora=True, lora_r=4) if lora else {}))
    full = train(run_config(tiny_model_dir, pairs_file, tmp_path / "full", max_steps=7, **keys))
    train(run_config(tiny_model_dir, pairs_file, tmp_path / "part", max_steps=3, **keys))
    resumed = train(run_config(tiny_model_dir, pairs_file, tmp_path / "part", max_steps=7, resume=True, **keys))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # training metrics (the stopped run also evaluated at its last step, 3)
    rows_full, rows_part = ([{k: v for k, v in r.items() if not k.startswith("eval/")} for r in
                             deterministic(read_metrics(f.parent / "metrics.jsonl"))] for f in (full, resumed))
    assert rows_full == rows_part and rows_full[-1]["train/epoch"] > 1


def test_steered_training_with_a_dpo_term(tiny_model_dir, pairs_file, tmp_path):
    """Paired batches: both rows of a pair carry the pair's aux_coef into the loss."""
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path, pref_loss="dpo", steer_aux_coefs=[0.0, 2.0]))
    assert read_steering(final) == [0.0, 2.0]
    rows = [r for r in read_metrics(final.parent / "metrics.jsonl") if "train/loss" in r]
    assert rows and all(r["train/upo/aux_coef_mean"] in (0.0, 1.0, 2.0) for r in rows)  # batch 2: mean of 2 pairs
    assert "eval/upo/aux_coef_mean" in read_metrics(final.parent / "metrics.jsonl")[-1]  # held-out pairs, conditioned
