"""The demo's data pieces: prompt lists, the simulated user's scores, and pair building."""

from __future__ import annotations

import json

import pytest

from upo.demo.dataset import build_demo_pairs, write_jsonl
from upo.demo.prompts import EVAL_PROMPTS, TRAIN_PROMPTS
from upo.demo.simulated_user import content_stems, label_pair, user_score

PROMPT = "Why do leaves change color in autumn?"
ON_TOPIC = "In autumn, leaves change color because trees stop making green chlorophyll."
OFF_TOPIC = "Bread needs flour, water and yeast."


# ---- prompts -------------------------------------------------------------------------------------


def test_prompt_lists_have_documented_sizes_and_no_overlap():
    assert len(TRAIN_PROMPTS) == 64 and len(EVAL_PROMPTS) == 24
    assert len(set(TRAIN_PROMPTS)) == 64 and len(set(EVAL_PROMPTS)) == 24
    assert not {p.lower() for p in TRAIN_PROMPTS} & {p.lower() for p in EVAL_PROMPTS}


def test_prompts_are_short_questions_with_content_words():
    for prompt in TRAIN_PROMPTS + EVAL_PROMPTS:
        assert 0 < len(prompt.split()) <= 25, prompt
        assert prompt == prompt.strip() and prompt[-1] in ".?", prompt
        assert content_stems(prompt), prompt  # else the simulated user could not rank answers


# ---- simulated user ------------------------------------------------------------------------------


def test_prompt_content_stems():
    """Stopwords (why, do, in) go; "leaves" -> "leav" (-es), "change" -> "chang" (-e)."""
    assert content_stems(PROMPT) == {"leav", "chang", "color", "autumn"}
    assert content_stems("changes changing changed change") == {"chang"}


def test_on_topic_complete_answer_beats_off_topic():
    """On topic: all 4 prompt stems + ends with '.': 4/4 + 0.2 = 1.2.
    Off topic: 0/4 stems + 0.2 = 0.2."""
    assert user_score(PROMPT, ON_TOPIC) == pytest.approx(1.2)
    assert user_score(PROMPT, OFF_TOPIC) == pytest.approx(0.2)
    assert label_pair(PROMPT, OFF_TOPIC, ON_TOPIC) == (ON_TOPIC, OFF_TOPIC)
    assert label_pair(PROMPT, ON_TOPIC, OFF_TOPIC) == (ON_TOPIC, OFF_TOPIC)


def test_partial_coverage():
    """'Autumn leaves are pretty.' covers autumn, leav of 4 stems: 2/4 + 0.2 = 0.7."""
    assert user_score(PROMPT, "Autumn leaves are pretty.") == pytest.approx(0.7)


def test_complete_bonus():
    """Cut off mid-sentence: 4/4 + 0 = 1.0; a closing quote after '!' still counts: 1.2."""
    truncated = "In autumn, leaves change color because trees"
    assert user_score(PROMPT, truncated) == pytest.approx(1.0)
    assert user_score(PROMPT, '"Autumn leaves change color!"') == pytest.approx(1.2)
    assert label_pair(PROMPT, truncated, ON_TOPIC) == (ON_TOPIC, truncated)


def test_loop_penalty():
    """'leaves change color in' occurs 3 times: 4/4 + 0.2 - 0.3 = 0.9; twice is not a loop: 1.2."""
    sentence = "Leaves change color in autumn. "
    assert user_score(PROMPT, (sentence * 3).strip()) == pytest.approx(0.9)
    assert user_score(PROMPT, (sentence * 2).strip()) == pytest.approx(1.2)


def test_ties_give_no_label():
    """Both cover 4/4 and end with '.': 1.2 = 1.2."""
    assert label_pair(PROMPT, ON_TOPIC, "Leaves change color in autumn.") is None
    assert label_pair(PROMPT, "", "") is None


# ---- pair building -------------------------------------------------------------------------------


def _fake_generate(samples: list[list[str]], calls: list[dict]):
    def fake(model, tokenizer, prompts, **kwargs):
        calls.append({"prompts": prompts, **kwargs})
        return samples

    return fake


def test_build_demo_pairs_picks_best_and_worst(monkeypatch):
    """Scores for PROMPT: ON_TOPIC 1.2, "Autumn leaves are pretty." 0.7, OFF_TOPIC 0.2.
    Prompt 1 pairs best with worst; prompt 2 ties (1.2, 1.2) and prompt 3 has one non-empty
    response, so both are skipped."""
    samples = [
        ["Autumn leaves are pretty.", OFF_TOPIC, ON_TOPIC],
        [ON_TOPIC, "Leaves change color in autumn.", ON_TOPIC],
        ["", ON_TOPIC, ""],
    ]
    calls: list[dict] = []
    monkeypatch.setattr("upo.demo.dataset.generate", _fake_generate(samples, calls))
    rows = build_demo_pairs(None, None, [PROMPT] * 3, samples_per_prompt=3, seed=5, progress=False)
    assert rows == [
        {"prompt": [{"role": "user", "content": PROMPT}], "chosen": ON_TOPIC, "rejected": OFF_TOPIC}
    ]
    (call,) = calls
    assert call["prompts"] == [[{"role": "user", "content": PROMPT}]] * 3
    assert call["num_return_sequences"] == 3 and call["seed"] == 5
    assert call["do_sample"] and call["temperature"] == 1.0


def test_build_demo_pairs_on_tiny_model(tiny_model, tiny_tokenizer, monkeypatch):
    """End to end: every prompt is sampled; a row exists exactly for prompts whose best and worst
    non-empty samples differ in score, and it is well formed."""
    import upo.demo.dataset as dataset

    # words from the tiny tokenizer's corpus, so its random model sometimes emits one (with
    # torch 2.13 and seed 0 one prompt gets a row; the checks hold whatever the samples are)
    prompts = [
        "Why add water, flour and salt to bread?",
        "Is Paris the capital of France?",
        "Mix water and yeast?",
    ]
    seen: list[list[list[str]]] = []

    def spy(*args, **kwargs):
        seen.append(generate(*args, **kwargs))
        return seen[-1]

    generate = dataset.generate
    monkeypatch.setattr(dataset, "generate", spy)
    rows = build_demo_pairs(
        tiny_model, tiny_tokenizer, prompts, samples_per_prompt=3, max_new_tokens=16, progress=False
    )

    (samples,) = seen
    assert [len(s) for s in samples] == [3, 3, 3]
    expected = []
    for prompt, responses in zip(prompts, samples, strict=True):
        scores = [user_score(prompt, r) for r in responses if r]
        if len(scores) >= 2 and max(scores) - min(scores) > 1e-9:
            expected.append(prompt)
    assert [row["prompt"][0]["content"] for row in rows] == expected
    for row in rows:
        prompt = row["prompt"][0]["content"]
        assert row["prompt"] == [{"role": "user", "content": prompt}]
        assert row["chosen"] in samples[prompts.index(prompt)] and row["rejected"]
        assert user_score(prompt, row["chosen"]) > user_score(prompt, row["rejected"])


def test_build_demo_pairs_needs_two_samples(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="samples_per_prompt"):
        build_demo_pairs(tiny_model, tiny_tokenizer, ["Hi?"], samples_per_prompt=1, progress=False)


def test_write_jsonl_round_trips(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "Café?"}], "chosen": "Oui.", "rejected": "No"}]
    path = tmp_path / "sub" / "pairs.jsonl"
    write_jsonl(rows, path)
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == rows
