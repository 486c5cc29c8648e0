"""Experiments: the plan of the paper's comparison, its statistics, tables, charts and reports,
and prefix transfer. Pure data: the orchestration that runs the plan as sessions (the manifest,
output folders, reading results back) is `sessions/compare.py`.

    spec = CompareSpec.create("cmp", base_config, arms=["baseline", "gpta"], seeds=[42, 43],
                              train_sizes=[500])
    outcome = sessions.compare.run_compare(spec, home)   # cmp-gpta-s42-n500, ...
    results = sessions.compare.collect_results(spec, home, outcome.manifest)
    table = build_table(spec, results)
    write_reports(spec, results, outcome.out_dir)  # results.md, results.csv, runs.csv, PNGs

A comparison runs every arm x seed x train size (x `finetune.max_windows`, the TA data-scale
ablation of the paper's Table 2) as a session named `<name>-<arm>-s<seed>-n<size>[-w<windows>]`,
so each one is listed, resumable and exportable like any other. All numbers in the reports are
read back from the sessions' own records (test metric of the best checkpoint, validation per
epoch, loss) into `RunResult`s.

Arms: `baseline`, `gpta`, `gpta-data` (the engine's modes) and, with a prefix set from
`export_prefix_set`, `fixed` (train with the transferred best prefix, TA unused) and `seeded`
(GPTA starting from the transferred prefixes), the paper's prefix transfer (section 5.3).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine.config import MODES, RunConfig
from engine.errors import DataError, UsageError
from engine.fsutil import write_text_atomic
from engine.paths import SESSION_NAME_RE

PREFIX_SET_FORMAT = "gpta-prefix-set"
TRANSFER_ARMS = ("fixed", "seeded")
ARMS = (*MODES, *TRANSFER_ARMS)
# Arms that never fine-tune a TA: max_windows is moot for them.
NO_TA_ARMS = ("baseline", "fixed", "frozen-ta", "random-prefix", "static-prefix")
MAX_NAME = 64


# ==========================================================================================
# Prefix sets (paper 5.3: prefix transfer)
# ==========================================================================================
def top_prefixes(handle, top: int = 5) -> list[dict]:
    """The best prefixes a session found, best first: [{prefix, score, epoch}].

    The session's best prefix (the one its test score used) comes first, then the last
    epoch's history by score: those scores come from the final student, so they compare.
    """
    if top <= 0:
        raise UsageError(f"invalid --top {top}", "use a number greater than 0")
    history = handle.history()
    if not history:
        raise UsageError(f"session {handle.name!r} recorded no prefix history "
                         "(a baseline or fixed-prefix run searches no prefixes)",
                         "export from a gpta or gpta-data session")
    rec = handle.record()
    best = rec.get("best") or {}
    last = max(r["epoch"] for r in history)
    ranked = sorted((r for r in history if r["epoch"] == last), key=lambda r: r["rank"])
    out: list[dict] = []
    if best.get("prefix"):
        score = best.get("score", (best.get("metrics") or {}).get(record_metric(rec)))
        out.append({"prefix": best["prefix"], "score": score, "epoch": best.get("epoch")})
    for row in ranked:
        if all(row["prefix"] != o["prefix"] for o in out):
            out.append({"prefix": row["prefix"], "score": row["score"], "epoch": row["epoch"]})
    return out[:top]


def record_metric(rec: dict) -> str:
    """The metric a session record is scored by."""
    return rec.get("metric") or rec.get("config", {}).get("student", {}).get("metric", "accuracy")


def export_prefix_set(handle, path: Path | str, top: int = 5) -> dict:
    """Write the top `top` prefixes of a finished session as a prefix set (JSON); return it."""
    if handle.status != "finished":
        raise UsageError(f"session {handle.name!r} is {handle.status}, not finished",
                         f"finish it first with `gpta resume {handle.name}`")
    rec = handle.record()
    cfg = rec.get("config", {})
    data = {
        "format": PREFIX_SET_FORMAT,
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {"session": handle.name, "dataset": cfg.get("data", {}).get("dataset", ""),
                   "task": cfg.get("data", {}).get("task", ""), "mode": cfg.get("mode", ""),
                   "student": cfg.get("student", {}).get("model", ""),
                   "metric": record_metric(rec), "seed": cfg.get("seed")},
        "prefixes": top_prefixes(handle, top),
    }
    write_text_atomic(Path(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return data


def load_prefix_set(path: Path | str) -> list[str]:
    """The prefixes of a prefix set file, best first. Also accepts a JSON list of strings
    or {"prefixes": [...]} with strings or {"prefix": ...} objects."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"prefix set {str(p)!r} does not exist",
                         "write one with `gpta prefixes export NAME FILE`")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"prefix set {str(p)!r} is not valid JSON ({exc})",
                        "write it with `gpta prefixes export NAME FILE`") from None
    items = data.get("prefixes") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise DataError(f"prefix set {str(p)!r} holds no list of prefixes",
                        'give a JSON list of strings or {"prefixes": [...]}')
    prefixes: list[str] = []
    for item in items:
        text = item.get("prefix") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise DataError(f"prefix set {str(p)!r} has an entry that is not a prefix: {item!r}",
                            "each entry must be a string or an object with a \"prefix\" string")
        text = " ".join(text.split())
        if text and text not in prefixes:
            prefixes.append(text)
    if not prefixes:
        raise DataError(f"prefix set {str(p)!r} is empty", "export one from a finished gpta session")
    return prefixes


def seed_prefix_settings(path: Path | str, fixed: bool = False) -> dict:
    """The [loop] settings for `gpta run --seed-prefixes FILE [--fixed-prefix]`."""
    return {"seed_prefixes": load_prefix_set(path), "fixed_prefix": bool(fixed)}


# ==========================================================================================
# The plan
# ==========================================================================================
@dataclass(frozen=True)
class Setting:
    """One column of the comparison table."""

    train_size: int
    max_windows: int | None = None  # None: not varied (the config's finetune.max_windows)

    @property
    def label(self) -> str:
        return f"n={self.train_size}" + ("" if self.max_windows is None else f", w={self.max_windows}")


@dataclass(frozen=True)
class RunSpec:
    session: str
    arm: str
    seed: int
    train_size: int
    max_windows: int | None  # None for arms without a TA or when windows are not varied

    def matches(self, setting: Setting) -> bool:
        return self.train_size == setting.train_size and (
            self.max_windows is None or self.max_windows == setting.max_windows)


@dataclass
class CompareSpec:
    name: str
    arms: list[str]
    seeds: list[int]
    train_sizes: list[int]
    max_windows: list[int] = field(default_factory=list)  # [] = not varied
    seed_prefixes: list[str] = field(default_factory=list)  # for the fixed / seeded arms
    base: dict = field(default_factory=dict)  # RunConfig.to_dict() every run starts from

    @classmethod
    def create(cls, name: str, config: RunConfig, *, arms: Iterable[str], seeds: Iterable[int],
               train_sizes: Iterable[int] | None = None, max_windows: Iterable[int] = (),
               seed_prefixes: Iterable[str] = ()) -> "CompareSpec":
        base = config.copy()
        base.name = ""
        spec = cls(name=name, arms=list(arms), seeds=[int(s) for s in seeds],
                   train_sizes=[int(n) for n in (train_sizes or [config.data.train_size])],
                   max_windows=[int(w) for w in max_windows],
                   seed_prefixes=list(seed_prefixes), base=base.to_dict())
        return spec.validate()

    def validate(self) -> "CompareSpec":
        if not SESSION_NAME_RE.match(self.name or ""):
            raise UsageError(f"invalid comparison name {self.name!r}",
                             "use letters, digits, '.', '_' or '-', starting with a letter or digit")
        for label, values in (("--modes", self.arms), ("--seeds", self.seeds),
                              ("--train-sizes", self.train_sizes)):
            if not values:
                raise UsageError(f"{label} is empty", f"give at least one value for {label}")
            if len(set(values)) != len(values):
                raise UsageError(f"{label} repeats a value ({values})", "list each value once")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise UsageError(f"unknown mode {unknown[0]!r} in --modes",
                             f"use some of {', '.join(ARMS)}")
        if any(a in TRANSFER_ARMS for a in self.arms) and not self.seed_prefixes:
            raise UsageError("the fixed and seeded modes need transferred prefixes",
                             "pass --seed-prefixes FILE (from `gpta prefixes export`)")
        if any(n <= 0 for n in self.train_sizes) or any(w <= 0 for w in self.max_windows):
            raise UsageError("train sizes and window counts must be greater than 0",
                             "e.g. --train-sizes 1000,10000 --max-windows 50,100")
        if len(set(self.max_windows)) != len(self.max_windows):
            raise UsageError(f"--max-windows repeats a value ({self.max_windows})", "list each value once")
        config = RunConfig.from_dict(self.base, f"comparison {self.name}")
        self.base = config.to_dict()  # every field present: plans saved by older versions compare
        if self.max_windows and config.finetune_backend == "none":
            raise UsageError("--max-windows varies the TA's fine-tuning data, but the TA is never "
                             "fine-tuned (finetune.backend none)",
                             "add --finetune-backend local (or openai), or drop --max-windows")
        longest = max((r.session for r in self.runs()), key=len)
        if len(longest) > MAX_NAME:
            raise UsageError(f"session name {longest!r} would be longer than {MAX_NAME} characters",
                             "choose a shorter --name")
        for run in self.runs():  # an arm's own settings refused now, not after the runs before it
            self.run_config(run)
        return self

    def settings(self) -> list[Setting]:
        windows: list[int | None] = list(self.max_windows) or [None]
        return [Setting(n, w) for n in self.train_sizes for w in windows]

    def runs(self) -> list[RunSpec]:
        """Every run in execution order: setting by setting, seed by seed, arm by arm. Arms
        without a TA run once per train size when windows are varied."""
        out: list[RunSpec] = []
        for n in self.train_sizes:
            for w in list(self.max_windows) or [None]:
                for seed in self.seeds:
                    for arm in self.arms:
                        if w is not None and arm in NO_TA_ARMS:
                            if w != self.max_windows[0]:
                                continue
                            window = None
                        else:
                            window = w
                        name = f"{self.name}-{arm}-s{seed}-n{n}" + ("" if window is None else f"-w{window}")
                        out.append(RunSpec(name, arm, seed, n, window))
        return out

    def run_config(self, run: RunSpec) -> RunConfig:
        """The complete configuration of one run (validated)."""
        cfg = RunConfig.from_dict(self.base, f"comparison {self.name}")
        cfg.name = run.session
        cfg.mode = "gpta" if run.arm in TRANSFER_ARMS else run.arm
        cfg.seed = run.seed
        cfg.data.train_size = run.train_size
        if run.max_windows is not None:
            cfg.finetune.max_windows = run.max_windows
        cfg.loop.seed_prefixes = list(self.seed_prefixes) if run.arm in TRANSFER_ARMS else []
        cfg.loop.fixed_prefix = run.arm == "fixed"
        return cfg.validate()

    @property
    def metric(self) -> str:
        return self.base.get("student", {}).get("metric", "accuracy")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CompareSpec":
        names = {"name", "arms", "seeds", "train_sizes", "max_windows", "seed_prefixes", "base"}
        return cls(**{k: v for k, v in data.items() if k in names}).validate()


def spec_differences(a: CompareSpec, b: CompareSpec) -> list[str]:
    """Dotted keys where two plans differ (to explain why a comparison cannot continue)."""
    return dotted_differences(a.to_dict(), b.to_dict())


def dotted_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two nested mappings differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out.extend(dotted_differences(a.get(key), b.get(key), f"{prefix}{key}."))
        return out
    return [] if a == b else [prefix.rstrip(".")]


# ==========================================================================================
# Results (read back from the sessions by sessions/compare.py)
# ==========================================================================================
@dataclass
class RunResult:
    run: RunSpec
    status: str                   # a session status, or "missing"
    test: float | None = None     # test metric with the best prefix (best checkpoint)
    test_no_prefix: float | None = None
    best_val: float | None = None
    best_epoch: int | None = None
    best_prefix: str = ""
    val_curve: list[tuple[int, float]] = field(default_factory=list)   # (epoch, val metric)
    loss_curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, mean train loss)
    ta_requests: int = 0
    wall_s: float | None = None
    best_selection: float | None = None  # the chosen (checkpoint, prefix) on the selection split
    copied: int = 0                      # TA prefixes rejected as copies of the prompt's examples
    prefix_words: list[int] = field(default_factory=list)  # word count of every new scored prefix
    history_sizes: list[int] = field(default_factory=list)  # prefixes ranked per epoch (<= k)
    # What a side-by-side view of sessions shows besides (gpta-tui's compare view):
    metric: str = ""                     # the session's metric (the plan's, in a comparison)
    test_metrics: dict[str, float] = field(default_factory=dict)            # every test metric
    test_metrics_no_prefix: dict[str, float] = field(default_factory=dict)  # the same, no prefix
    epochs_done: int = 0
    ta_tokens: int = 0
    ta_cost: float = 0.0                 # estimated (engine.pricing), 0 for a local TA
    status_reason: str = ""
    config: dict = field(default_factory=dict)  # the session's stored config

    @property
    def done(self) -> bool:
        return self.status == "finished" and self.test is not None




# ==========================================================================================
# Statistics
# ==========================================================================================
def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std is None below two values."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def ranks(scores: dict[str, float]) -> dict[str, float]:
    """Rank 1 = highest score; ties share the average of their ranks. Scores equal up to
    float rounding tie: (167/300 + 171/300) / 2 and 169/300 differ in the last bit."""
    ordered = sorted(scores, key=lambda k: -scores[k])
    out: dict[str, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and math.isclose(scores[ordered[j + 1]], scores[ordered[i]],
                                                    rel_tol=1e-9, abs_tol=1e-12):
            j += 1
        for k in ordered[i:j + 1]:
            out[k] = (i + j) / 2 + 1
        i = j + 1
    return out


@dataclass
class PairedTest:
    n: int
    mean_diff: float | None
    t: float | None
    p: float | None
    method: str  # "scipy.stats.ttest_rel", or why there is no test


def paired_t_test(a: list[float], b: list[float]) -> PairedTest:
    """Two-sided paired t-test of a - b (scipy.stats.ttest_rel)."""
    from scipy import stats  # imported here: scipy takes a while to load

    if len(a) != len(b):
        raise ValueError("paired samples need the same length")
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    if n == 0:
        return PairedTest(0, None, None, None, "no paired runs")
    mean = statistics.fmean(diffs)
    if n < 2:
        return PairedTest(n, mean, None, None, "one pair: no test")
    if statistics.stdev(diffs) == 0:
        return PairedTest(n, mean, None, None, "identical differences: no test")
    res = stats.ttest_rel(a, b)
    return PairedTest(n, mean, float(res.statistic), float(res.pvalue), "scipy.stats.ttest_rel")


# ==========================================================================================
# The table (the paper's Table 1 layout)
# ==========================================================================================
@dataclass
class Cell:
    values: dict[int, float]   # seed -> test metric
    mean: float | None
    std: float | None
    rank: float | None = None


@dataclass
class Gain:
    arm: str
    setting: Setting
    test: PairedTest
    reference: str = "baseline"   # the arm the gain is measured against
    p_holm: float | None = None   # p adjusted for every test of the report (Holm)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the order given: the i-th smallest of m p-values
    is multiplied by (m - i), kept monotone and capped at 1. A report runs one test per arm and
    reference, so an uncorrected p of 0.04 among 8 tests is weak evidence; the adjusted value
    says so. None (no test) stays None and does not count towards m."""
    order = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for position, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - position) * pvalues[i]))
        adjusted[i] = running
    return adjusted


#: Arms every other arm is compared with, when present: the no-prefix baseline, and the
#: random-prefix control (the same best-of-k budget with no task knowledge).
REFERENCE_ARMS = ("baseline", "random-prefix")


@dataclass
class CompareTable:
    metric: str
    arms: list[str]
    settings: list[Setting]
    cells: dict[tuple[str, Setting], Cell]
    avg_rank: dict[str, float | None]
    gains: list[Gain]
    missing: list[str]  # planned sessions without a finished result


def _test_key(gain: Gain) -> tuple:
    """One paired test: the unordered pair of arms and the setting."""
    return tuple(sorted((gain.arm, gain.reference))), gain.setting


def distinct_tests(gains: list[Gain]) -> int:
    """How many paired tests (with a p-value) the gains hold; Holm's m."""
    return len({_test_key(g) for g in gains if g.test.p is not None})


def build_table(spec: CompareSpec, results: list[RunResult]) -> CompareTable:
    """Mean +- std per arm and setting, ranks per setting, average rank, and the paired gain
    of every arm over the baseline (seeds where both finished)."""
    settings = spec.settings()
    cells: dict[tuple[str, Setting], Cell] = {}
    for arm in spec.arms:
        for setting in settings:
            values = {r.run.seed: r.test for r in results
                      if r.run.arm == arm and r.run.matches(setting) and r.done}
            mean, std = mean_std([values[s] for s in sorted(values)])
            cells[(arm, setting)] = Cell(values, mean, std)
    for setting in settings:
        scored = {arm: cells[(arm, setting)].mean for arm in spec.arms
                  if cells[(arm, setting)].mean is not None}
        for arm, rank in ranks(scored).items():
            cells[(arm, setting)].rank = rank
    avg_rank = {}
    for arm in spec.arms:
        got = [cells[(arm, s)].rank for s in settings if cells[(arm, s)].rank is not None]
        avg_rank[arm] = statistics.fmean(got) if got else None
    gains = []
    for reference in (r for r in REFERENCE_ARMS if r in spec.arms):
        for arm in spec.arms:
            if arm == reference:
                continue
            for setting in settings:
                mine, base = cells[(arm, setting)].values, cells[(reference, setting)].values
                seeds = [s for s in spec.seeds if s in mine and s in base]
                gains.append(Gain(arm, setting, paired_t_test([mine[s] for s in seeds],
                                                              [base[s] for s in seeds]), reference))
    # baseline vs random-prefix is listed under both references but is one test: Holm counts
    # each pair of arms once (per setting) and gives both listings the same adjusted p.
    tests = {_test_key(g): g.test.p for g in gains}
    adjusted = dict(zip(tests, holm(list(tests.values()))))
    for gain in gains:
        gain.p_holm = adjusted[_test_key(gain)]
    missing = [r.run.session for r in results if not r.done]
    return CompareTable(spec.metric, list(spec.arms), settings, cells, avg_rank, gains, missing)


def _fmt(value: float | None, digits: int = 4, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _fmt_p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def table_markdown(table: CompareTable) -> str:
    """The comparison as Markdown: mean ± std (rank) per cell, the average rank, and the
    gain over the baseline with its paired test."""
    head = ["Mode", *[s.label for s in table.settings], "Avg rank"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = {s: min((c.rank for (a, s2), c in table.cells.items() if s2 == s and c.rank is not None),
                   default=None) for s in table.settings}
    for arm in table.arms:
        row = [arm]
        for s in table.settings:
            c = table.cells[(arm, s)]
            if c.mean is None:
                row.append("-")
                continue
            text = f"{_fmt(c.mean)} ± {_fmt(c.std)}" if c.std is not None else f"{_fmt(c.mean)}"
            text += f" ({c.rank:g})"
            row.append(f"**{text}**" if c.rank == best[s] else text)
        row.append(_fmt(table.avg_rank[arm], 2))
        lines.append("| " + " | ".join(row) + " |")
    out = "\n".join(lines) + "\n"
    for reference in dict.fromkeys(g.reference for g in table.gains):
        head = [f"Gain over {reference}", *[s.label for s in table.settings]]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for arm in [a for a in table.arms if a != reference]:
            row = [arm]
            for s in table.settings:
                gain = next(g for g in table.gains
                            if g.arm == arm and g.setting == s and g.reference == reference)
                g = gain.test
                row.append("-" if g.mean_diff is None else
                           f"{_fmt(g.mean_diff, signed=True)} (p={_fmt_p(g.p)}, "
                           f"Holm {_fmt_p(gain.p_holm)}, n={g.n})")
            lines.append("| " + " | ".join(row) + " |")
        out += "\n" + "\n".join(lines) + "\n"
    return out


def table_csv(table: CompareTable) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["mode", "train_size", "max_windows", "metric", "n", "mean", "std", "rank",
                "avg_rank", "gain_vs_baseline", "p_value", "test", "gain_vs_random_prefix",
                "p_value_vs_random_prefix", "values", "p_holm", "p_holm_vs_random_prefix"])
    for arm in table.arms:
        for s in table.settings:
            c = table.cells[(arm, s)]
            gain, rgain = (next((g for g in table.gains if g.arm == arm and g.setting == s
                                 and g.reference == ref), None) for ref in REFERENCE_ARMS)
            g, r = (x.test if x else None for x in (gain, rgain))
            w.writerow([arm, s.train_size, "" if s.max_windows is None else s.max_windows,
                        table.metric, len(c.values), _csv_num(c.mean), _csv_num(c.std), _csv_num(c.rank),
                        _csv_num(table.avg_rank[arm]), _csv_num(g.mean_diff if g else None),
                        _csv_num(g.p if g else None), g.method if g else "",
                        _csv_num(r.mean_diff if r else None), _csv_num(r.p if r else None),
                        ";".join(f"s{k}={v:.6f}" for k, v in sorted(c.values.items())),
                        _csv_num(gain.p_holm if gain else None),
                        _csv_num(rgain.p_holm if rgain else None)])
    return buf.getvalue()


def runs_csv(results: list[RunResult], metric: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["session", "mode", "seed", "train_size", "max_windows", "status", f"test_{metric}",
                f"test_{metric}_no_prefix", f"best_val_{metric}", f"best_selection_{metric}",
                "best_epoch", "best_prefix", "val_per_epoch", "train_loss_per_epoch", "ta_requests",
                "copied_from_prompt", "mean_prefix_words", "history_size_per_epoch", "wall_s"])
    for r in results:
        words = statistics.fmean(r.prefix_words) if r.prefix_words else None
        w.writerow([r.run.session, r.run.arm, r.run.seed, r.run.train_size,
                    "" if r.run.max_windows is None else r.run.max_windows, r.status, _csv_num(r.test),
                    _csv_num(r.test_no_prefix), _csv_num(r.best_val), _csv_num(r.best_selection),
                    r.best_epoch or "", r.best_prefix,
                    ";".join(f"{v:.6f}" for _, v in r.val_curve),
                    ";".join(f"{v:.6f}" for _, v in r.loss_curve), r.ta_requests, r.copied,
                    _csv_num(words), ";".join(map(str, r.history_sizes)), _csv_num(r.wall_s)])
    return buf.getvalue()


def _csv_num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


# ==========================================================================================
# Per-epoch series and charts (paper Figure 3: over-fitting)
# ==========================================================================================
@dataclass
class Band:
    """A per-epoch curve over seeds: mean and sample std (0 with one seed)."""

    epochs: list[int]
    mean: list[float]
    std: list[float]
    n: list[int]


def _band(curves: list[list[tuple[int, float]]]) -> Band:
    by_epoch: dict[int, list[float]] = {}
    for curve in curves:
        for epoch, value in curve:
            if not math.isnan(value):
                by_epoch.setdefault(epoch, []).append(value)
    epochs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[e]) for e in epochs]
    stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
    return Band(epochs, means, stds, [len(by_epoch[e]) for e in epochs])


def epoch_bands(results: list[RunResult], setting: Setting, arms: Iterable[str],
                curve: str = "val") -> dict[str, Band]:
    """Per arm, the mean (and band) of a per-epoch curve over seeds in one setting:
    curve "val" (validation metric) or "loss" (mean training loss)."""
    out = {}
    for arm in arms:
        curves = [r.val_curve if curve == "val" else r.loss_curve for r in results
                  if r.run.arm == arm and r.run.matches(setting) and r.val_curve]
        if curves:
            out[arm] = _band(curves)
    return out


def low_resource_setting(spec: CompareSpec) -> Setting:
    """The over-fitting view's setting: the smallest train size (first window count)."""
    return min(spec.settings(), key=lambda s: s.train_size)



def _plot_band(ax, band: Band, label: str) -> None:
    line, = ax.plot(band.epochs, band.mean, marker="o", label=f"{label} (n={max(band.n)})")
    if any(band.std):
        lo = [m - s for m, s in zip(band.mean, band.std)]
        hi = [m + s for m, s in zip(band.mean, band.std)]
        ax.fill_between(band.epochs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


def write_charts(spec: CompareSpec, results: list[RunResult], out_dir: Path) -> list[Path]:
    """curves.png: validation metric per epoch per mode (mean ± std band), one panel per
    setting; overfitting.png: training loss and validation metric per epoch in the
    low-resource setting. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    metric = spec.metric
    written = []
    settings = spec.settings()
    cols = min(3, len(settings))
    rows = -(-len(settings) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(5 * cols, 8), 3.6 * rows + 0.4),
                             squeeze=False)
    for ax, setting in zip(axes.flat, settings):
        for arm, band in epoch_bands(results, setting, spec.arms, "val").items():
            _plot_band(ax, band, arm)
        ax.set_title(setting.label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.lines:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(settings):]:
        ax.set_visible(False)
    fig.suptitle(f"{spec.name}: validation {metric} per epoch (mean ± std over seeds)")
    fig.tight_layout()
    path = out_dir / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    setting = low_resource_setting(spec)
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.8))
    for arm, band in epoch_bands(results, setting, spec.arms, "loss").items():
        _plot_band(ax_loss, band, arm)
    for arm, band in epoch_bands(results, setting, spec.arms, "val").items():
        _plot_band(ax_val, band, arm)
    for ax, ylabel in ((ax_loss, "mean training loss"), (ax_val, f"validation {metric}")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"{spec.name}: over-fitting view, {setting.label} (low-resource)")
    fig.tight_layout()
    path = out_dir / "overfitting.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


# ==========================================================================================
# Reports
# ==========================================================================================
def _fmt_wall(seconds: float | None) -> str:
    if not seconds:
        return "-"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes}m{sec:02d}s" if minutes else f"{sec}s"


def report_markdown(spec: CompareSpec, results: list[RunResult], table: CompareTable,
                    manifest: dict | None = None, charts: Iterable[Path] = ()) -> str:
    cfg = spec.base
    data, student, ta, ft, loop = (cfg.get(k, {}) for k in ("data", "student", "ta", "finetune", "loop"))
    lines = [f"# Comparison `{spec.name}`", ""]
    lines += [
        f"- Dataset: {data.get('dataset')} ({data.get('task')}); train sizes "
        f"{', '.join(map(str, spec.train_sizes))}, validation {data.get('val_size')}, "
        f"test {data.get('test_size')}",
        f"- Student: {student.get('model')} ({student.get('tuning')} tuning), lr {student.get('lr')}, "
        f"batch {student.get('batch_size')}, max length {student.get('max_length')}",
        f"- Teaching assistant: {ta.get('backend')} {ta.get('model')}; fine-tune: {ft.get('backend')}"
        + (f", max windows {', '.join(map(str, spec.max_windows))}" if spec.max_windows
           else f", max windows {ft.get('max_windows')}"),
        f"- Loop: {loop.get('epochs')} epochs, k={loop.get('k')}, l={loop.get('l')}, "
        f"window w={loop.get('window')}",
        f"- Modes: {', '.join(spec.arms)}; seeds: {', '.join(map(str, spec.seeds))}",
        f"- Metric: test {table.metric} of the best checkpoint and prefix, "
        + (f"chosen on a separate selection split of {data.get('selection_size')} rows "
           "(validation only ranks prefixes)" if data.get("selection_size") else
           "chosen on validation (no selection split: optimistic for best-of-k arms)")
        + "; mean ± sample std over seeds, (rank) per column; best in bold",
    ]
    if spec.seed_prefixes:
        lines.append(f"- Transferred prefixes ({len(spec.seed_prefixes)}), first: "
                     f"`{spec.seed_prefixes[0]}`")
    done = sum(r.done for r in results)
    wall = sum(r.wall_s or 0 for r in results)
    total = (manifest or {}).get("wall_s")
    lines.append(f"- Runs finished: {done} of {len(results)}; time in runs {_fmt_wall(wall)}"
                 + (f", wall time of the comparison {_fmt_wall(total)}" if total else "")
                 + (f", started {time.strftime('%Y-%m-%d %H:%M', time.localtime(manifest['created']))}"
                    if manifest and manifest.get("created") else ""))
    lines += ["", "## Results", "", table_markdown(table).rstrip(), ""]
    if table.gains:
        methods = sorted({g.test.method for g in table.gains})
        tested = distinct_tests(table.gains)
        lines += [f"Gain: mean paired difference (mode − reference) over seeds; p: two-sided "
                  f"paired t-test ({'; '.join(methods)}), uncorrected; Holm: p adjusted "
                  f"(Holm-Bonferroni) for all {tested} tests of this report.", ""]
    if table.missing:
        lines += [f"Not included (not finished): {', '.join(table.missing)}.", ""]
    lines += ["## Runs", "", f"| Session | Mode | Seed | n | Status | Test {table.metric} | "
              f"Without prefix | Val | Selection | Epoch | Chosen prefix | Train loss per epoch | "
              f"TA requests | Copies rejected | Words per prefix | Ranked per epoch | Time |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        prefix = " ".join(r.best_prefix.split()).replace("|", "\\|") if r.best_prefix else "(none)"
        words = f"{statistics.fmean(r.prefix_words):.1f}" if r.prefix_words else "-"
        losses = " → ".join(f"{v:.3f}" for _, v in r.loss_curve) or "-"
        lines.append(f"| {r.run.session} | {r.run.arm} | {r.run.seed} | {r.run.train_size} | "
                     f"{r.status} | {_fmt(r.test)} | {_fmt(r.test_no_prefix)} | {_fmt(r.best_val)} | "
                     f"{_fmt(r.best_selection)} | {r.best_epoch or '-'} | {prefix} | {losses} | "
                     f"{r.ta_requests} | {r.copied} | {words} | "
                     f"{'/'.join(map(str, r.history_sizes)) or '-'} | {_fmt_wall(r.wall_s)} |")
    charts = list(charts)
    if charts:
        lines += ["", "## Charts", ""]
        lines += [f"![{p.stem}]({p.name})" for p in charts]
    return "\n".join(lines) + "\n"


def write_reports(spec: CompareSpec, results: list[RunResult], out_dir: Path | str,
                  manifest: dict | None = None) -> dict[str, Path]:
    """results.md, results.csv, runs.csv, curves.png and overfitting.png in `out_dir`.
    Charts need matplotlib; without it the rest is still written and a note says so."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(spec, results)
    files: dict[str, Path] = {}
    charts: list[Path] = []
    chart_note = ""
    try:
        charts = write_charts(spec, results, out)
    except ImportError:
        chart_note = "Charts skipped: matplotlib is not installed (pip install matplotlib)."
    for path in charts:
        files[path.stem] = path
    md = report_markdown(spec, results, table, manifest, charts)
    if chart_note:
        md += f"\n{chart_note}\n"
    for name, text in (("results.md", md), ("results.csv", table_csv(table)),
                       ("runs.csv", runs_csv(results, spec.metric))):
        write_text_atomic(out / name, text)
        files[name] = out / name
    return files
