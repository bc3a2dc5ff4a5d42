"""`upo frontier`'s flags and up-front checks: what would run other than asked is refused, a bad point
fails before anything trains, and an llm judge must answer only while something is left to evaluate
(synthetic training and evaluation from test_frontier_seeds)."""

from __future__ import annotations

import yaml
from test_frontier_seeds import fake_eval, fake_train, sweep_file

import upo.frontier.run as frontier_run
from upo.cli import main


def test_frontier_flags_that_would_do_other_than_asked_are_refused(tmp_path, monkeypatch, capsys):
    """A seed named twice would count its run twice (narrower intervals); --quick on a sweep without
    quick: would be the full sweep; --status lists every run whatever --seeds/--points say; a bad
    point config fails before anything trains, naming the file and the point; --finished --points
    says "every run of the points ..." only of those points; an unknown compare_metrics name is
    warned of on the console too."""
    trained = []
    monkeypatch.setattr("upo.trainer.train", lambda cfg: trained.append(cfg.method) or fake_train(cfg))
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    sweep = sweep_file(tmp_path, [1, 2])
    for flags, message in ((["--seeds", "1,1"], "--seeds 1,1: a seed named twice"),
                           (["--quick"], "--quick applies the sweep's quick: overrides, and it has none"),
                           (["--status", "--seeds", "1"], "--status lists every run of the sweep; it takes no --seeds"),
                           (["--status", "--points", "dpo", "--finished"], "it takes no --points or --finished")):
        assert main(["frontier", "--config", str(sweep), *flags]) == 2, flags
        assert message in capsys.readouterr().err, flags
    assert trained == []

    spec = yaml.safe_load(sweep.read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**spec, "points": [{"name": "last", "method": "upo", "steer_aux_coefs": [-1, 1]}]}))
    assert main(["frontier", "--config", str(bad)]) == 2
    assert f"upo: error: {bad}: point last: steer_aux_coefs must be" in capsys.readouterr().err
    assert trained == [] and not (tmp_path / "frontier" / "points").exists()
    assert main(["frontier", "--config", str(bad), "--points", "dpo"]) == 0  # the bad point is not run
    assert trained == ["dpo"] * 2

    assert main(["frontier", "--config", str(sweep), "--points", "dpo"]) == 0
    capsys.readouterr()
    assert main(["frontier", "--config", str(sweep), "--finished", "--points", "dpo"]) == 0
    out = capsys.readouterr().out
    assert "--finished: every run of the points dpo (--points) at seeds 1, 2 is finished" in out
    assert "WARNING: compare_metrics: no point has 'no/such_metric'; not compared" in out


def test_an_llm_judge_is_asked_to_answer_only_when_something_is_left_to_evaluate(tmp_path, monkeypatch, capsys):
    """A sweep judged by an llm: its server not answering is an error before anything trains, but once
    every run is finished, the report is written without it."""
    import socket

    from upo.judges import LLMJudge

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    trained = []
    monkeypatch.setattr("upo.trainer.train", lambda cfg: trained.append(cfg.method) or fake_train(cfg))
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    spec = yaml.safe_load(sweep_file(tmp_path, [1]).read_text())
    spec["eval"].update(judge="llm", judge_model="m", judge_base_url=gone)
    sweep = tmp_path / "llm.yaml"
    sweep.write_text(yaml.safe_dump(spec))
    assert main(["frontier", "--config", str(sweep)]) == 2
    assert "upo: error: LLM judge: nothing answers at judge_base_url" in capsys.readouterr().err and trained == []
    check = LLMJudge.check_reachable
    monkeypatch.setattr(LLMJudge, "check_reachable", lambda self: None)  # as if it answered
    assert main(["frontier", "--config", str(sweep), "--seeds", "1"]) == 0 and len(trained) == 5
    monkeypatch.setattr(LLMJudge, "check_reachable", check)  # gone again: every run is finished
    assert main(["frontier", "--config", str(sweep)]) == 0 and (tmp_path / "frontier" / "report.md").exists()
