"""Experiments: prefix transfer in the loop, `gpta compare` orchestration, aggregation and
statistics, reports, and `gpta prefixes export`. Tiny random BERT, generated CSV, in-test TA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import events as ev
from engine.config import build_config
from engine.errors import ConfigError
from engine.finetune.base import FinetuneBackend, JobStatus
from engine.loop import Engine
from fake_ta import SeededTA
from test_engine import Recorder

WORDS = ["judge", "the", "feeling", "in", "this", "tweet", "mood", "tone", "label", "opinion",
         "positive", "negative", "neutral", "carefully", "read", "sentiment"]


class FakeTA(SeededTA):
    def __init__(self):
        super().__init__(WORDS, prompt_tokens=10, tokens_per_prefix=5)


class InstantJobs(FinetuneBackend):
    name = "fake"
    poll_interval_s = 0.0

    def submit(self, examples, base_model, workdir, epoch):
        return f"job-{epoch}"

    def poll(self, job_id):
        return JobStatus(job_id, "succeeded", model=f"tuned-{job_id}")


def tiny_overrides(tiny_bert_dir: Path, csv: Path, **over) -> dict:
    base = {
        "seed": 3, "device": "cpu",  # exact replay is a CPU promise
        "data": {"dataset": str(csv), "train_size": 48, "val_size": 24, "test_size": 24},
        "student": {"model": str(tiny_bert_dir), "max_length": 32, "batch_size": 8,
                    "eval_batch_size": 32, "lr": 1e-3, "checkpoint_every": 4},
        "loop": {"epochs": 2, "k": 4, "l": 2, "window": 2},
        "ta": {"backend": "scripted"},
    }
    for key, value in over.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return base


SEEDS = ["Decide the sentiment of the tweet:", "Is this tweet positive, negative or neutral?",
         "Tweet mood:"]


# ---- prefix transfer in the loop ----------------------------------------------------------
def test_seed_prefixes_replace_the_first_ta_call(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = build_config("default", overrides=tiny_overrides(
        tiny_bert_dir, sentiment_csv, loop={"epochs": 1, "seed_prefixes": SEEDS}))
    ta, rec = FakeTA(), Recorder()
    done = Engine(cfg, tmp_path, ta=ta, finetune=InstantJobs(), listeners=[rec]).run()
    assert done.status == "finished"
    # epoch 1 trains with the first seed prefix; no TA call happened before collection
    assert rec.of(ev.ValidationResult)[0].prefix == SEEDS[0]
    first_request = rec.events.index(rec.of(ev.TARequest)[0])
    phases = [e for e in rec.events[:first_request] if isinstance(e, ev.PhaseChanged)]
    assert [p.phase for p in phases][-1] == "collecting"
    # the other seeds are the first candidates: scored before any TA prefix, as carried ones
    scored = rec.of(ev.PrefixScored)
    assert [s.prefix for s in scored[:2]] == SEEDS[1:] and all(s.request_id == -1 for s in scored[:2])
    assert len(ta.calls) == 1  # k=4: the training prefix, 2 seeds, then one request for 1


def test_fixed_prefix_trains_every_epoch_with_it_and_never_uses_the_ta(
        tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = build_config("default", overrides=tiny_overrides(
        tiny_bert_dir, sentiment_csv, loop={"seed_prefixes": SEEDS, "fixed_prefix": True}))
    ta, rec = FakeTA(), Recorder()
    engine = Engine(cfg, tmp_path, ta=ta, finetune=InstantJobs(), listeners=[rec])
    done = engine.run()
    assert done.status == "finished"
    assert ta.calls == [] and not rec.of(ev.TARequest) and not rec.of(ev.FinetuneUpdate)
    assert [v.prefix for v in rec.of(ev.ValidationResult)] == [SEEDS[0]] * cfg.loop.epochs
    assert done.best_prefix == SEEDS[0] and done.test_metrics and done.test_metrics_no_prefix
    assert not rec.of(ev.PrefixScored)


def test_fixed_prefix_does_not_build_a_ta(tiny_bert_dir, sentiment_csv, tmp_path):
    # ta.backend local would load Gemma; a fixed prefix never needs it
    cfg = build_config("default", overrides=tiny_overrides(
        tiny_bert_dir, sentiment_csv, ta={"backend": "local"},
        loop={"epochs": 1, "seed_prefixes": SEEDS[:1], "fixed_prefix": True}))
    engine = Engine(cfg, tmp_path)
    assert engine.run().status == "finished"
    assert engine.ta is None and engine.finetune is None


def test_fixed_prefix_needs_a_seed_prefix(tiny_bert_dir, sentiment_csv):
    with pytest.raises(ConfigError, match="loop.fixed_prefix"):
        build_config("default", overrides=tiny_overrides(
            tiny_bert_dir, sentiment_csv, loop={"fixed_prefix": True}))
    with pytest.raises(ConfigError, match="seed_prefixes"):
        build_config("default", overrides=tiny_overrides(
            tiny_bert_dir, sentiment_csv, loop={"seed_prefixes": ["ok", "  "]}))


# ---- statistics by hand ------------------------------------------------------------------
from engine.experiments import (CompareSpec, RunResult, RunSpec, Setting, build_table,  # noqa: E402
                                load_prefix_set, mean_std, paired_t_test, ranks,
                                seed_prefix_settings, table_csv, table_markdown)
from sessions.compare import collect_results, overfitting_series, read_manifest, run_compare  # noqa: E402


def test_ranks_share_ties_and_mean_std_is_the_sample_std():
    assert ranks({"a": 0.7, "b": 0.9, "c": 0.7, "d": 0.1}) == {"b": 1, "a": 2.5, "c": 2.5, "d": 4}
    assert ranks({"a": (167 / 300 + 171 / 300) / 2, "b": 169 / 300}) == {"a": 1.5, "b": 1.5}
    mean, std = mean_std([0.60, 0.64])
    assert mean == pytest.approx(0.62) and std == pytest.approx(0.0282842712)
    assert mean_std([0.5]) == (0.5, None) and mean_std([]) == (None, None)


def test_paired_t_test_by_hand():
    # differences 0.06 and 0.02: mean 0.04, sd 0.028284, t = 2, df = 1 (Cauchy): p = 1 - 2 atan(2)/pi
    import math

    res = paired_t_test([0.66, 0.66], [0.60, 0.64])
    assert res.n == 2 and res.mean_diff == pytest.approx(0.04)
    assert res.t == pytest.approx(2.0) and res.p == pytest.approx(1 - 2 * math.atan(2) / math.pi)
    # df = 2 has a closed form too: p = 1 - t / sqrt(2 + t^2); differences 0.1, 0.2, 0.3 give t = 2 sqrt(3)
    res = paired_t_test([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
    t = 2 * math.sqrt(3)
    assert res.t == pytest.approx(t) and res.p == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)
    assert res.method == "scipy.stats.ttest_rel"
    assert paired_t_test([0.5], [0.4]).p is None
    assert paired_t_test([0.5, 0.6], [0.4, 0.5]).method.startswith("identical")


def test_holm_adjustment_by_hand():
    from engine.experiments import holm

    # sorted 0.01, 0.02, 0.04 among m = 3: 0.03, 0.04, then max(0.04, 0.04) = 0.04
    assert holm([0.04, 0.01, None, 0.02]) == pytest.approx([0.04, 0.03, None, 0.04], nan_ok=False)
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1, monotone
    assert holm([0.3, 0.01]) == pytest.approx([0.3, 0.02])
    assert holm([]) == [] and holm([None]) == [None]


def _result(arm, seed, n, test, w=None, val=()):
    run = RunSpec(f"x-{arm}-s{seed}-n{n}", arm, seed, n, w)
    return RunResult(run, "finished", test=test, val_curve=list(enumerate(val, 1)))


def test_table_by_hand_with_a_window_ablation(tiny_bert_dir, sentiment_csv):
    cfg = build_config("default", overrides=tiny_overrides(
        tiny_bert_dir, sentiment_csv, finetune={"backend": "local"}))
    spec = CompareSpec.create("x", cfg, arms=["baseline", "gpta"], seeds=[1, 2],
                              train_sizes=[100], max_windows=[50, 100])
    # baseline runs once per seed (no TA to fine-tune); gpta once per seed and window count
    assert [r.session for r in spec.runs()] == [
        "x-baseline-s1-n100", "x-gpta-s1-n100-w50", "x-baseline-s2-n100", "x-gpta-s2-n100-w50",
        "x-gpta-s1-n100-w100", "x-gpta-s2-n100-w100"]
    results = [_result("baseline", 1, 100, 0.60), _result("baseline", 2, 100, 0.64),
               _result("gpta", 1, 100, 0.66, 50), _result("gpta", 2, 100, 0.66, 50),
               _result("gpta", 1, 100, 0.58, 100), _result("gpta", 2, 100, 0.62, 100)]
    table = build_table(spec, results)
    w50, w100 = Setting(100, 50), Setting(100, 100)
    assert table.cells[("baseline", w50)].mean == pytest.approx(0.62)
    assert table.cells[("baseline", w100)].values == {1: 0.60, 2: 0.64}
    assert table.cells[("gpta", w50)].mean == pytest.approx(0.66)
    assert table.cells[("gpta", w50)].std == pytest.approx(0.0)
    assert table.cells[("gpta", w100)].mean == pytest.approx(0.60)
    assert table.cells[("gpta", w100)].std == pytest.approx(0.0282842712)
    assert (table.cells[("gpta", w50)].rank, table.cells[("baseline", w50)].rank) == (1, 2)
    assert (table.cells[("gpta", w100)].rank, table.cells[("baseline", w100)].rank) == (2, 1)
    assert table.avg_rank == {"baseline": 1.5, "gpta": 1.5}
    gain50 = next(g.test for g in table.gains if g.setting == w50)
    gain100 = next(g.test for g in table.gains if g.setting == w100)
    assert gain50.mean_diff == pytest.approx(0.04) and gain50.t == pytest.approx(2.0)
    assert gain100.mean_diff == pytest.approx(-0.02) and gain100.method.startswith("identical")
    md = table_markdown(table)
    assert "| Mode | n=100, w=50 | n=100, w=100 | Avg rank |" in md
    assert "**0.6600 ± 0.0000 (1)**" in md and "0.6000 ± 0.0283 (2)" in md
    # one test in the report (the other has identical differences): Holm leaves its p alone
    assert "+0.0400 (p=0.295, Holm 0.295, n=2)" in md and "-0.0200 (p=-, Holm -, n=2)" in md
    rows = table_csv(table).splitlines()
    assert rows[1].startswith("baseline,100,50,accuracy,2,0.62,0.0282843,2,1.5,,,")
    assert "s1=0.660000;s2=0.660000" in rows[3]


def test_every_arm_is_tested_against_the_baseline_and_the_random_prefix_control(
        tiny_bert_dir, sentiment_csv):
    cfg = build_config("default", overrides=tiny_overrides(tiny_bert_dir, sentiment_csv))
    arms = ["baseline", "gpta", "random-prefix", "static-prefix"]
    spec = CompareSpec.create("c", cfg, arms=arms, seeds=[1, 2, 3], train_sizes=[100])
    tests = {"baseline": [0.60, 0.62, 0.61], "gpta": [0.63, 0.66, 0.62],
             "random-prefix": [0.62, 0.65, 0.62], "static-prefix": [0.61, 0.62, 0.63]}
    results = [_result(arm, seed, 100, value) for arm, values in tests.items()
               for seed, value in zip((1, 2, 3), values)]
    table = build_table(spec, results)
    (setting,) = spec.settings()
    by = {(g.arm, g.reference): g.test for g in table.gains}
    assert set(by) == {(a, r) for r in ("baseline", "random-prefix") for a in arms if a != r}
    assert by[("gpta", "baseline")].mean_diff == pytest.approx((0.03 + 0.04 + 0.01) / 3)
    assert by[("gpta", "random-prefix")].mean_diff == pytest.approx((0.01 + 0.01 + 0.0) / 3)
    assert by[("gpta", "random-prefix")].n == 3
    md = table_markdown(table)
    assert "| Gain over baseline |" in md and "| Gain over random-prefix |" in md
    header, *rows = table_csv(table).splitlines()
    assert header.split(",")[12:14] == ["gain_vs_random_prefix", "p_value_vs_random_prefix"]
    gpta_row = next(r for r in rows if r.startswith("gpta,")).split(",")
    assert float(gpta_row[12]) == pytest.approx(0.02 / 3)
    # Holm over the report's tests: 6 listings, but baseline vs random-prefix appears under
    # both references and is one test, so m = 5 and both listings carry the same adjusted p.
    assert header.split(",")[-2:] == ["p_holm", "p_holm_vs_random_prefix"]
    from engine.experiments import holm, report_markdown

    adjusted = {(g.arm, g.reference): g.p_holm for g in table.gains}
    assert adjusted[("baseline", "random-prefix")] == adjusted[("random-prefix", "baseline")]
    distinct = [("gpta", "baseline"), ("random-prefix", "baseline"), ("static-prefix", "baseline"),
                ("gpta", "random-prefix"), ("static-prefix", "random-prefix")]
    assert all(by[k].p is not None for k in distinct)
    expected = holm([by[k].p for k in distinct])
    assert [adjusted[k] for k in distinct] == pytest.approx(expected, rel=1e-12)
    assert all(g.p_holm >= g.test.p for g in table.gains)
    assert "Holm-Bonferroni) for all 5 tests" in report_markdown(spec, results, table)


def test_plan_errors_are_usage_errors(tiny_bert_dir, sentiment_csv):
    from engine.errors import UsageError

    cfg = build_config("default", overrides=tiny_overrides(tiny_bert_dir, sentiment_csv))
    cases = [
        (dict(arms=["baseline", "bert"]), "unknown mode 'bert'"),
        (dict(arms=["baseline", "fixed"]), "need transferred prefixes"),
        (dict(arms=["gpta"], max_windows=[50]), "never fine-tuned"),
        (dict(arms=["gpta", "gpta"]), "repeats a value"),
        (dict(arms=["gpta"], seeds=[]), "--seeds is empty"),
    ]
    for kwargs, message in cases:
        kwargs = {"seeds": [1], **kwargs}
        with pytest.raises(UsageError, match=message):
            CompareSpec.create("x", cfg, **kwargs)
    with pytest.raises(UsageError, match="longer than 64"):
        CompareSpec.create("a" * 50, cfg, arms=["gpta-data"], seeds=[1000])


def test_a_foreign_session_or_changed_plan_is_refused(tiny_bert_dir, sentiment_csv, tmp_path):
    from engine.errors import UsageError
    from sessions.store import SessionStore

    home = tmp_path / "home"
    cfg = build_config("default", overrides=tiny_overrides(tiny_bert_dir, sentiment_csv))
    spec = CompareSpec.create("cmp", cfg, arms=["baseline"], seeds=[7])
    other = cfg.copy()
    other.name, other.mode, other.seed = "cmp-baseline-s7-n48", "baseline", 8
    SessionStore(home).create(other).close()
    with pytest.raises(UsageError, match=r"not made by comparison 'cmp'.*seed"):
        run_compare(spec, home)
    changed = CompareSpec.create("cmp", cfg, arms=["baseline"], seeds=[7, 8])
    with pytest.raises(UsageError, match=r"started with other settings \(they differ in seeds\)"):
        run_compare(changed, home)


# ---- a real (tiny) comparison: sessions, resume, table from the sessions, reports ------------
@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_bert_dir, sentiment_csv):
    """baseline vs gpta, 2 seeds, stopped in its third run and then continued."""
    from engine.controls import Controls

    home = tmp_path_factory.mktemp("cmp") / "home"
    # enough data and a high learning rate that the tiny model learns: seeds score differently
    cfg = build_config("default", overrides=tiny_overrides(
        tiny_bert_dir, sentiment_csv, data={"train_size": 160, "val_size": 48, "test_size": 48},
        student={"lr": 1e-2}))
    spec = CompareSpec.create("cmp", cfg, arms=["baseline", "gpta"], seeds=[3, 4])
    controls = Controls()

    def listeners_for(run, i, total):
        def stop_in_third_run(event):
            if i == 3 and isinstance(event, ev.TrainStep) and event.step == 2:
                controls.stop()
        return [stop_in_third_run]

    engine_parts = lambda config: {"ta": FakeTA(), "finetune": InstantJobs()}  # noqa: E731
    first = run_compare(spec, home, controls=controls, engine_kwargs=engine_parts,
                        listeners_for=listeners_for)
    second = run_compare(spec, home, controls=Controls(), engine_kwargs=engine_parts)
    return home, spec, first, second


def test_compare_creates_named_sessions_and_resumes_skipping_finished(compared):
    from sessions.store import SessionStore

    home, spec, first, second = compared
    names = ["cmp-baseline-s3-n160", "cmp-gpta-s3-n160", "cmp-baseline-s4-n160", "cmp-gpta-s4-n160"]
    assert [r.session for r in spec.runs()] == names
    assert first.status == "stopped" and first.ran == names[:3] and first.skipped == []
    assert second.status == "finished"
    assert second.skipped == names[:2] and second.ran == names[2:]
    store = SessionStore(home)
    assert set(names) <= set(store.names())
    with store.open(names[2]) as resumed:
        assert resumed.status == "finished" and len(resumed.record()["resumes"]) == 1
    manifest = read_manifest(home / "compare" / "cmp")
    assert all(manifest["runs"][n]["status"] == "finished" for n in names)
    assert all(manifest["runs"][n]["wall_s"] > 0 for n in names)
    with store.open("cmp-gpta-s3-n160") as h:
        assert h.record()["config"]["mode"] == "gpta" and h.ta_calls()
    with store.open("cmp-baseline-s3-n160") as h:
        assert h.record()["config"]["mode"] == "baseline" and not h.ta_calls()


def test_table_values_come_from_the_sessions_test_metrics(compared):
    import statistics

    from sessions.store import SessionStore

    home, spec, _, second = compared
    store = SessionStore(home)
    test = {}
    for name in store.names():
        with store.open(name) as h:
            test[name] = h.record()["finished"]["test_metrics"]["accuracy"]
    assert len(set(test.values())) > 1  # the runs really differ, so the check below has teeth
    results = collect_results(spec, home, second.manifest)
    table = build_table(spec, results)
    (setting,) = spec.settings()
    for arm in ("baseline", "gpta"):
        values = [test[f"cmp-{arm}-s3-n160"], test[f"cmp-{arm}-s4-n160"]]
        cell = table.cells[(arm, setting)]
        assert cell.values == {3: values[0], 4: values[1]}
        assert cell.mean == pytest.approx(sum(values) / 2)
        assert cell.std == pytest.approx(statistics.stdev(values))
    means = {a: table.cells[(a, setting)].mean for a in ("baseline", "gpta")}
    if means["gpta"] != means["baseline"]:
        better = max(means, key=means.get)
        assert table.cells[(better, setting)].rank == 1
    gain = table.gains[0].test
    assert gain.n == 2
    assert gain.mean_diff == pytest.approx(means["gpta"] - means["baseline"])


def test_reports_and_per_epoch_series(compared):
    from engine.experiments import write_reports
    from sessions.store import SessionStore

    home, spec, _, second = compared
    out = second.out_dir
    results = collect_results(spec, home, second.manifest)
    files = write_reports(spec, results, out, second.manifest)
    for name in ("results.md", "results.csv", "runs.csv", "curves.png", "overfitting.png"):
        assert (out / name).is_file()
    for png in ("curves.png", "overfitting.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = files["results.md"].read_text()
    assert "| Mode | n=160 | Avg rank |" in md and "cmp-gpta-s4-n160" in md
    assert "Runs finished: 4 of 4" in md and "![curves](curves.png)" in md
    runs = files["runs.csv"].read_text().splitlines()
    assert len(runs) == 5 and runs[0].startswith("session,mode,seed,train_size")
    # the over-fitting view: per-epoch validation of each arm, averaged over seeds
    series = overfitting_series("cmp", home)
    assert set(series) == {"baseline", "gpta"}
    with SessionStore(home).open("cmp-baseline-s3-n160") as a, \
            SessionStore(home).open("cmp-baseline-s4-n160") as b:
        vals = [[v["metrics"]["accuracy"] for v in h.validations()] for h in (a, b)]
    band = series["baseline"]["val"]
    assert band.epochs == [1, 2] and band.n == [2, 2]
    assert band.mean == pytest.approx([(x + y) / 2 for x, y in zip(*vals)])
    assert len(series["baseline"]["loss"].mean) == 2


# ---- prefix sets and the CLI -------------------------------------------------------------
@pytest.fixture()
def cli(monkeypatch):
    from gpta_tui import cli as cli_module

    if "gpta_tui.commands.compare" not in cli_module.COMMAND_MODULES:
        monkeypatch.setattr(cli_module, "COMMAND_MODULES",
                            [*cli_module.COMMAND_MODULES, "gpta_tui.commands.compare"])
    return cli_module.main


def test_prefix_export_and_a_fixed_prefix_comparison_through_the_cli(
        compared, cli, tiny_bert_dir, sentiment_csv, tmp_path, capsys):
    from sessions.store import SessionStore

    home = compared[0]
    file = tmp_path / "top.json"
    assert cli(["--home", str(home), "prefixes", "export", "cmp-gpta-s3-n160", str(file),
                "--top", "3"]) == 0
    data = json.loads(file.read_text())
    with SessionStore(home).open("cmp-gpta-s3-n160") as h:
        best = h.record()["best"]["prefix"]
        last = max(r["epoch"] for r in h.history())
        known = {r["prefix"]: r["score"] for r in h.history() if r["epoch"] == last}
    assert data["format"] == "gpta-prefix-set" and data["source"]["session"] == "cmp-gpta-s3-n160"
    assert len(data["prefixes"]) == 3 and data["prefixes"][0]["prefix"] == best
    later = data["prefixes"][1:]
    assert all(known[p["prefix"]] == p["score"] for p in later)
    assert [p["score"] for p in later] == sorted((p["score"] for p in later), reverse=True)
    assert load_prefix_set(file) == [p["prefix"] for p in data["prefixes"]]
    assert seed_prefix_settings(file, fixed=True) == {
        "seed_prefixes": [p["prefix"] for p in data["prefixes"]], "fixed_prefix": True}
    capsys.readouterr()
    assert cli(["--home", str(home), "prefixes", "export", "cmp-baseline-s3-n160",
                str(tmp_path / "none.json")]) == 2
    assert "recorded no prefix history" in capsys.readouterr().err

    # transfer: baseline vs the fixed transferred prefix, through `gpta compare`
    argv = ["--home", str(home), "compare", "--name", "tr", "--modes", "baseline,fixed",
            "--seeds", "1", "--seed", "5", "--seed-prefixes", str(file), "--dataset", str(sentiment_csv),
            "--train-size", "48", "--val-size", "24", "--test-size", "24",
            "--student-model", str(tiny_bert_dir), "--max-length", "32", "--batch-size", "8",
            "--lr", "1e-3", "--epochs", "1", "--k", "4", "--l", "2", "--window", "2",
            "--ta-backend", "local"]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "| Mode | n=48 | Avg rank |" in out and "| fixed |" in out
    with SessionStore(home).open("tr-fixed-s5-n48") as h:
        rec = h.record()
        assert rec["config"]["loop"]["fixed_prefix"] is True
        assert [v["prefix"] for v in h.validations()] == [best]
        assert h.ta_calls() == [] and rec["finished"]["best_prefix"] == best
    assert (home / "compare" / "tr" / "results.md").is_file()
    # running it again runs nothing; --resume with a plan flag is refused
    assert cli(argv) == 0
    assert "finished earlier, skipped" in capsys.readouterr().err
    assert cli(["--home", str(home), "compare", "--name", "tr", "--resume", "--seeds", "2"]) == 2
    assert "cannot change a saved comparison" in capsys.readouterr().err
    (home / "compare" / "tr" / "results.md").unlink()
    assert cli(["--home", str(home), "compare", "--name", "tr", "--report-only"]) == 0
    assert "| fixed |" in capsys.readouterr().out
    assert (home / "compare" / "tr" / "results.md").is_file()


def test_prefix_set_files(tmp_path):
    from engine.errors import DataError, UsageError

    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(["  Rate  the tweet: ", "Mood?", "Mood?"]))
    assert load_prefix_set(plain) == ["Rate the tweet:", "Mood?"]
    objects = tmp_path / "obj.json"
    objects.write_text(json.dumps({"prefixes": [{"prefix": "A"}, "B"]}))
    assert load_prefix_set(objects) == ["A", "B"]
    with pytest.raises(UsageError, match="does not exist"):
        load_prefix_set(tmp_path / "missing.json")
    for text, message in (("{not json", "not valid JSON"), ("[]", "is empty"),
                          ('{"prefixes": [3]}', "not a prefix"), ('{"x": 1}', "no list")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(DataError, match=message):
            load_prefix_set(bad)


def test_a_plan_saved_before_new_config_fields_still_matches(tiny_bert_dir, sentiment_csv):
    from engine.experiments import spec_differences
    from sessions.compare import _comparable

    cfg = build_config("default", overrides=tiny_overrides(tiny_bert_dir, sentiment_csv))
    spec = CompareSpec.create("x", cfg, arms=["baseline"], seeds=[1])
    old = spec.to_dict()
    for key in ("seed_prefixes", "fixed_prefix"):  # fields an older gpta did not have
        del old["base"]["loop"][key]
    assert spec_differences(CompareSpec.from_dict(old), spec) == []
    stored = spec.run_config(spec.runs()[0]).to_dict()
    del stored["loop"]["fixed_prefix"]
    assert _comparable(stored) == _comparable(spec.run_config(spec.runs()[0]).to_dict())
