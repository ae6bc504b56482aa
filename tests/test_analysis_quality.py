"""Every detector over every simulated scenario with several seeds: a confusion matrix.

Each scenario's ground truth (from `simulate`) says which finding kinds a diagnosis
should report and which groups leak. The matrix is printed (run with -s to see it);
the tests require every leak found with its source, and no leak where there is none.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import polars as pl
import pytest

from clientscope.analysis import Diagnosis, diagnose, leaks
from clientscope.simulation import SCENARIOS, SimulationResult, simulate_tables

SEEDS = (0, 1, 2)
NO_LEAK = ("healthy", "warmup", "scale_out", "daily_cycle", "restart")
KINDS = ("leak", "exhaustion", "saturation", "no_pooling", "oversized_pool", "blocking",
         "no_idle_timeout", "pubsub_pileup", "output_buffer")  # fmt: skip


@dataclass(frozen=True)
class MemoryTables:
    """Parsed tables held in memory (the analyses take anything with these three LazyFrames)."""

    captures: pl.LazyFrame
    clients: pl.LazyFrame
    info: pl.LazyFrame


def run(scenario: str, seed: int) -> tuple[SimulationResult, Diagnosis]:
    truth, batches = simulate_tables(scenario, seed=seed)
    tables = MemoryTables(
        *(pl.concat([b[name] for b in batches]).lazy() for name in ("captures", "clients", "info"))
    )
    return truth, diagnose(tables)


@pytest.fixture(scope="module")
def runs() -> list[tuple[str, int, SimulationResult, Diagnosis]]:
    return [(sc, seed, *run(sc, seed)) for sc in SCENARIOS for seed in SEEDS]


def confusion(runs: list[tuple[str, int, SimulationResult, Diagnosis]]) -> dict[str, Counter[str]]:
    matrix: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
    for _, _, truth, diagnosis in runs:
        got = set(diagnosis.kinds())
        for kind in KINDS:
            expected = kind in truth.expected
            found = kind in got
            matrix[kind][
                "tp" if expected and found else "fn" if expected else "fp" if found else "tn"
            ] += 1
    return matrix


def test_confusion_matrix(runs: list[tuple[str, int, SimulationResult, Diagnosis]]) -> None:
    matrix = confusion(runs)
    print(f"\n{'detector':<16} {'TP':>4} {'FP':>4} {'FN':>4} {'TN':>4}   ({len(runs)} runs: "
          f"{len(SCENARIOS)} scenarios x {len(SEEDS)} seeds)")  # fmt: skip
    for kind, c in matrix.items():
        print(f"{kind:<16} {c['tp']:>4} {c['fp']:>4} {c['fn']:>4} {c['tn']:>4}")
    per_scenario = [
        f"{sc}/{seed}: expected {sorted(t.expected)}, got {sorted(set(d.kinds()))}"
        for sc, seed, t, d in runs
        if set(t.expected) != set(d.kinds()) & set(KINDS)
    ]
    # every detector is exercised and none is silent or trigger-happy
    assert all(c["tp"] > 0 for c in matrix.values()), matrix
    assert per_scenario == []


@pytest.mark.parametrize("scenario", ["leak", "slow_leak", "incident"])
def test_every_leak_found_with_its_source(
    runs: list[tuple[str, int, SimulationResult, Diagnosis]], scenario: str
) -> None:
    for sc, seed, truth, diagnosis in runs:
        if sc != scenario:
            continue
        assert truth.leaking and all(leak.rate_per_min >= 1.0 for leak in truth.leaking)
        found = {f.group for f in diagnosis.findings if f.kind == "leak"}
        assert found == {leak.group for leak in truth.leaking}, (sc, seed)
        leak_finding = next(f for f in diagnosis.findings if f.kind == "leak")
        rate = float(leak_finding.evidence["slope_per_hour"]) / 60  # type: ignore[arg-type]
        assert 0.5 * truth.leaking[0].rate_per_min <= rate <= 2.0 * truth.leaking[0].rate_per_min
        assert set(leak_finding.evidence["source_ips"]) <= set(truth.leaking[0].ips)  # type: ignore[call-overload]


@pytest.mark.parametrize("scenario", NO_LEAK)
def test_no_leak_where_there_is_none(
    runs: list[tuple[str, int, SimulationResult, Diagnosis]], scenario: str
) -> None:
    for sc, seed, _, diagnosis in runs:
        if sc == scenario:
            assert "leak" not in diagnosis.kinds(), (sc, seed, diagnosis.findings)
            report = diagnosis.leak_report
            assert report is not None and report.leaking.is_empty()


def test_growth_that_is_not_a_leak_is_named_growth() -> None:
    _, diagnosis = run("scale_out", 0)
    assert diagnosis.leak_report is not None
    verdicts = dict(diagnosis.leak_report.groups.select("group", "verdict").iter_rows())
    assert verdicts["search-api"] == "growth"


def test_pubsub_growth_is_excluded_from_leaks_but_reported() -> None:
    _, diagnosis = run("pubsub", 1)
    assert diagnosis.leak_report is not None
    row = diagnosis.leak_report.groups.filter(pl.col("group") == "notifier").row(0, named=True)
    assert row["verdict"] == "excluded:pubsub"
    assert "pubsub_pileup" in diagnosis.kinds()


@pytest.mark.parametrize("rate", [1.0, 1.5, 3.0, 10.0])
@pytest.mark.parametrize("scenario", ["leak", "slow_leak"])
def test_leaks_of_one_per_minute_or_more_over_30_minutes(scenario: str, rate: float) -> None:
    for seed in (3, 4):
        truth, batches = simulate_tables(
            scenario, seed=seed, captures=120, interval=15, leak_rate=rate
        )  # 30 minutes
        tables = MemoryTables(
            *(pl.concat([b[n] for b in batches]).lazy() for n in ("captures", "clients", "info"))
        )
        found = leaks(tables).leaking
        assert found["group"].to_list() == [truth.leaking[0].group], (scenario, rate, seed)
        slope = found["slope_theil_sen_per_h"][0] / 60
        assert 0.5 * rate <= slope <= 1.5 * rate
