"""The llm judge's protocols as pure pieces: prompt building, order randomization, reply reading, tallying."""

from __future__ import annotations

import pytest

from upo.judge_protocols import (
    PRESETS,
    Judgment,
    build_messages,
    item_orders,
    item_outcome,
    parse_answer,
    parse_leading_label,
    preset,
    tally,
    trim_unfinished,
)

PAPER, SWAP = PRESETS["paper"], PRESETS["swap"]


def test_paper_preset_is_the_papers_protocol():
    assert PAPER.prompts == 512 and SWAP.prompts is None
    assert not PAPER.both_orders and PAPER.random_order and not PAPER.retry_unreadable
    assert SWAP.both_orders and SWAP.retry_unreadable
    assert "more helpful, harmless, and concise?" in PAPER.template
    with pytest.raises(ValueError, match="unknown llm judge preset 'gpt4'.*swap, paper"):
        preset("gpt4")


def test_parse_leading_label():
    for text, expected in [("Response B", "B"), ("B", "B"), ("**Response A**", "A"), ("response a.", "A"),
                           ("Response B is more helpful and concise.", "B"), ("Response [B]", "B"),
                           ("Response A\n\nIt answers the question.", "A"), ("## Response B", "B"),
                           ("Response A. Response A is kinder.", "A"),
                           # unreadable rather than misread: the reply must open with one label and name no other
                           ("I prefer Response A.", None),
                           ("You can choose to respond with either response A or", None),  # SmolLM2's, cut at 10 tokens
                           ("Response A is worse than Response B", None),
                           ("A vast and mysterious place.", None),
                           ("Both are fine.", None), ("", None), ("ResponseAB", None), ("Responses", None),
                           ("A or B", None)]:
        assert parse_leading_label(text) == expected, text
    # the swap preset reads a bare label only
    assert parse_answer("Response B is more helpful.") is None and parse_answer("B") == "B"


def test_trim_unfinished_cuts_after_the_last_full_sentence():
    assert trim_unfinished("Tea is a drink. It comes from lea") == "Tea is a drink."
    assert trim_unfinished("Really? Yes! And then") == "Really? Yes!"
    assert trim_unfinished("No end in sight") == "No end in sight"  # nothing to cut back to
    assert trim_unfinished("Done.") == "Done." and trim_unfinished("") == ""


def test_item_orders():
    assert item_orders(3, SWAP, seed=0) == [(True, False)] * 3
    assert item_orders(3, PAPER, seed=0, both_orders=True) == [(True, False)] * 3
    orders = item_orders(200, PAPER, seed=0)
    assert all(len(o) == 1 for o in orders)
    assert orders == item_orders(200, PAPER, seed=0)  # the seed fixes them
    assert orders != item_orders(200, PAPER, seed=1)
    first = sum(o[0] for o in orders)
    assert 70 < first < 130  # each order with probability 1/2: 200 draws land within 4 standard deviations
    # a prefix of the items gets the same orders: evaluating 64 of the 512 prompts shows them as the 512 run did
    assert item_orders(64, PAPER, seed=0) == orders[:64]


def test_build_messages_paper():
    prompt = [{"role": "user", "content": "How do I boil an egg?"}, {"role": "assistant", "content": "Soft or hard?"},
              {"role": "user", "content": "Hard."}]
    system, user = build_messages(PAPER, prompt, "Boil it ten minutes. Then co", "Put it in water.")
    assert system == {"role": "system", "content": PAPER.system}
    assert user["role"] == "user"
    text = user["content"]
    assert "User: How do I boil an egg?\n\nAssistant: Soft or hard?\n\nUser: Hard." in text
    # the first response is shown as A, cut after its last full sentence; the second as B
    assert "Response A:\nBoil it ten minutes.\n(end of Response A)" in text
    assert "Response B:\nPut it in water.\n(end of Response B)" in text
    assert text.index("Response A:") < text.index("Response B:") < text.index("more helpful, harmless, and concise?")
    # the swap preset shows responses whole and a string prompt as it is
    swap_user = build_messages(SWAP, "Hi?", "a b c", "d")[1]["content"]
    assert "[Prompt]\nHi?\n" in swap_user and "[Response A]\na b c\n" in swap_user


def test_item_outcome_hand_worked():
    assert item_outcome((True,), ("A",)) == 1.0  # the response was A and A was picked
    assert item_outcome((False,), ("A",)) == 0.0  # the reference was A and A was picked
    assert item_outcome((False,), ("B",)) == 1.0
    assert item_outcome((True,), (None,)) is None  # unparseable: neither side
    assert item_outcome((True, False), ("A", "B")) == 1.0  # the response picked in both orders
    assert item_outcome((True, False), ("B", "A")) == 0.0
    assert item_outcome((True, False), ("A", "A")) == 0.5  # a flip with the order: position bias, a tie
    assert item_outcome((True, False), (None, "B")) == 1.0  # the readable verdict alone decides
    assert item_outcome((True, False), (None, None)) is None


def test_tally_and_records():
    judgments = [
        Judgment((True,), ("Response A",), ("A",)),  # win
        Judgment((False,), ("Response A",), ("A",)),  # loss
        Judgment((False,), ("Hmm.",), (None,)),  # no verdict
        Judgment((True, False), ("A", "A"), ("A", "A")),  # tie
        Judgment((True, False), ("?", "B"), (None, "B")),  # win, one reply unparseable
    ]
    assert tally(judgments) == {"questions": 7, "unparseable": 2, "wins": 2, "losses": 1, "ties": 1, "no_verdict": 1}
    assert judgments[1].record() == {"orders": ["reference_first"], "replies": ["Response A"], "verdicts": ["A"],
                                     "outcome": 0.0}
    assert judgments[2].record()["outcome"] is None
