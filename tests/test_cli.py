"""The command line: --help of every subcommand, errors without tracebacks, a 2-step train."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from upo.cli import main

SUBCOMMANDS = ["train", "demo", "score", "plot"]


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for sub in SUBCOMMANDS:
        assert sub in out


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_subcommand_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        main([sub, "--help"])
    assert e.value.code == 0
    assert "usage: upo " + sub in capsys.readouterr().out


def test_train_help_documents_every_config_key(capsys):
    from upo.config import FIELDS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key in FIELDS:
        assert f"--{key}" in out
    assert "AWR temperature" in out  # field comments become help text
    from upo.rewards.builtin import BUILTIN_REWARDS

    rewards = out[out.index("Rewards: "):]
    for name in BUILTIN_REWARDS:  # every built-in reward named (toxicity_<category>: each category)
        assert re.search(rf"\b{name.removeprefix('toxicity_')}\b", rewards), name


def test_unknown_flag_suggests_the_key(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--bta", "0.1"])
    assert e.value.code == 2
    assert "did you mean --beta" in capsys.readouterr().err


def test_bad_value_is_one_clear_line(capsys):
    assert main(["train", "--beta", "high"]) == 2
    err = capsys.readouterr().err
    assert "'beta' must be a number" in err and "Traceback" not in err


def test_missing_model_path_is_clear(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    code = main(["train", "--model", str(tmp_path / "no-such-model"), "--dataset", str(data), "--method", "dpo",
                 "--output_dir", str(tmp_path / "run")])
    assert code == 2
    assert "model path does not exist" in capsys.readouterr().err


def test_upo_train_two_steps_via_the_console_script(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Question {i}?", "chosen": f"A fine answer {i}.", "rejected": f"bad {i}!!"} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {tiny_model_dir}\ndataset: {data}\nmethod: upo\nrewards: {{length: 1.0}}\nprecision: fp32\n")
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "upo.cli", "train", "--config", str(config), "--max_steps", "2", "--batch_size", "2",
         "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), "--eval_fraction", "0.25"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    assert (out / "final" / "config.json").exists() and (out / "final" / "model.safetensors").exists()
    assert (out / "config.yaml").exists()


def test_upo_score_pairs_and_generations(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello, nice to meet you.", "rejected": "Go away, idiot."}) + "\n")
    out = tmp_path / "scores.jsonl"
    assert main(["score", "--data", str(pairs), "--scorers", "length,profanity", "--output", str(out),
                 "--cache_dir", str(tmp_path / "cache")]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["role"] for r in rows] == ["chosen", "rejected"]
    assert rows[0]["scores"]["length"] == -0.05  # 5 words / 100, negated
    assert rows[1]["scores"]["profanity"] < rows[0]["scores"]["profanity"]  # the insult is more profane
    table = capsys.readouterr().out
    assert "| chosen | 1 |" in table and "mean profanity" in table

    gens = tmp_path / "gens.jsonl"
    gens.write_text(json.dumps({"prompt": "Hi?", "response": "One two three."}) + "\n")
    assert main(["score", "--data", str(gens), "--scorers", "length", "--cache_dir", str(tmp_path / "cache")]) == 0
    assert "| generation | 1 | -0.03 |" in capsys.readouterr().out


def test_upo_score_names_bad_scorer(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    assert main(["score", "--data", str(pairs), "--scorers", "readabilty", "--cache_dir", str(tmp_path / "c")]) == 2
    assert "readability" in capsys.readouterr().err  # suggests the close built-in name


def test_hub_names_pass_through_and_missing_paths_or_models_are_errors(tmp_path):
    from upo.modeling import resolve_model_path

    for hub_name in ("Qwen/Qwen2.5-0.5B", "gpt2"):  # Hub names (dots allowed), not paths
        assert resolve_model_path(hub_name) == hub_name
    for missing in (str(tmp_path / "nope"), "./nope", "a/b/c"):
        with pytest.raises(FileNotFoundError, match="model path does not exist"):
            resolve_model_path(missing)
    with pytest.raises(FileNotFoundError, match="no model in this folder .no config.json"):
        resolve_model_path(str(tmp_path))
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "adapter_config.json").write_text("{}")  # a LoRA run saved unmerged
    with pytest.raises(FileNotFoundError, match=f"is a run folder: its trained model is {tmp_path / 'final'}"):
        resolve_model_path(str(tmp_path))  # the run folder given for its final/
    assert resolve_model_path(str(tmp_path / "final")) == str(tmp_path / "final")


def test_ctrl_c_in_train_is_one_line_saying_how_to_resume(tmp_path, capsys, monkeypatch):
    import upo.trainer

    def interrupted(cfg):
        (tmp_path / "run" / "checkpoints" / "step-4").mkdir(parents=True)
        (tmp_path / "run" / "checkpoints" / "step-4" / "trainer_state.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(upo.trainer, "train", interrupted)
    code = main(["train", "--dataset", "d.jsonl", "--output_dir", str(tmp_path / "run"), "--method", "dpo"])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"nothing is lost up to {tmp_path / 'run' / 'checkpoints' / 'step-4'}" in err and "--resume true" in err


def test_frontier_seeds_that_are_not_integers_say_what_is_expected(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frontier", "--config", "sweep.yaml", "--seeds", "1,two"])
    assert e.value.code == 2
    assert "--seeds: expected seeds as integers separated by commas (1,2), got '1,two'" in capsys.readouterr().err
