"""One answer per question: a figure shown in two places (a command and the report, two
commands, a chart and its caption) is the same number, because it comes from one function.

Simulated scenarios with a known truth, and the 'mixed' one shaped like a real 20-minute Redis
series: a pool warming up then scaling out, a batch pool that cycles, BLPOP consumers, a
connection-per-request client and two slow leaks (one named, one unnamed), maxclients 400."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import clientscope as cs
from clientscope.analysis import diagnose, forecast, idle, leaks, top
from clientscope.analysis._common import human_duration, snapshot_clients
from clientscope.analysis.groups import timeout_what_if
from clientscope.analysis.model import build_model
from clientscope.analysis.timeline import timeline
from clientscope.cli import app
from clientscope.reporting import charts
from clientscope.reporting.series import peak_capture
from clientscope.schema import UNNAMED
from clientscope.simulation import SimulationResult


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SimulationResult]:
    root = tmp_path_factory.mktemp("one-answer")
    return {
        name: cs.simulate(name, root / name, seed=seed)
        for name, seed in (("mixed", 1), ("leak", 2), ("slow_leak", 2), ("warmup", 1),
                           ("scale_out", 2), ("daily_cycle", 1), ("blocking", 1), ("incident", 4))
    }  # fmt: skip


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


# ------------------------------------------------------------------ time to maxclients
@pytest.mark.parametrize("scenario", ["warmup", "scale_out", "daily_cycle"])
def test_growth_that_settles_or_cycles_gives_no_time_to_maxclients(
    sims: dict[str, SimulationResult], scenario: str
) -> None:
    f = forecast(sims[scenario].path)
    assert f.verdict in ("plateaued", "stable", "falling"), f.note
    assert f.eta_maxclients is None and f.time_to_maxclients is None and f.drivers == ()


def test_two_slow_leaks_on_a_steady_base_add_their_rates(sims: dict[str, SimulationResult]) -> None:
    r = sims["mixed"]
    f = forecast(r.path)
    assert f.verdict == "will_exhaust"
    truth = {t.group: t.rate_per_min * 60 for t in r.leaking}
    assert {d.group for d in f.drivers} == set(truth)  # the warm-up and scale-out are not drivers
    assert f.slope_per_hour == pytest.approx(sum(truth.values()), rel=0.25)
    expected = f.maxclients - (f.steady_peak or 0) - sum(d.connections_now for d in f.drivers)
    assert f.time_to_maxclients == pytest.approx(timedelta(hours=expected / f.slope_per_hour),
                                                 abs=timedelta(seconds=1))  # fmt: skip
    # the naive line through the warm-up and the scale-out says much sooner
    assert f.prometheus_eta_maxclients is not None and f.eta_maxclients is not None
    assert f.prometheus_eta_maxclients < f.now + 0.75 * (f.eta_maxclients - f.now)


@pytest.mark.parametrize("scenario", ["mixed", "leak", "slow_leak", "warmup", "incident"])
def test_forecast_json_diagnose_card_and_chart_give_one_time(
    sims: dict[str, SimulationResult], scenario: str, tmp_path: Path
) -> None:
    path = sims[scenario].path
    f = forecast(path)
    shown = json.loads(cli("forecast", str(path), "--json"))[0]
    assert shown["eta_maxclients"] == (f.eta_maxclients.isoformat() if f.eta_maxclients else None)
    assert shown["verdict"] == f.verdict
    d = diagnose(path)
    assert [x.to_dict() for x in d.forecasts] == [f.to_dict()]
    for leak in (x for x in d.findings if x.kind == "leak"):
        times = re.findall(r"reaches maxclients in ([^.]+)\.", leak.summary)
        if f.time_to_maxclients is not None and f.verdict == "will_exhaust":
            assert times == [human_duration(f.time_to_maxclients)]  # the server's, not the group's
        else:
            assert times == []
    written = cs.report(path, tmp_path / "r")
    page = written.html.read_text()
    card = page[page.index("Time to exhaustion") :][:400]
    if f.verdict == "will_exhaust" and f.time_to_maxclients is not None:
        assert human_duration(f.time_to_maxclients) in card
    else:
        assert "not growing" in card or "reached" in card, card
    fig = charts.leak_trend(cs.open_dataset(path))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    projected = [lab for lab in labels if lab.startswith("forecast:")]
    if f.verdict == "will_exhaust":
        assert projected == [
            f"forecast: steady {f.steady_peak:.0f} + growing groups {f.slope_per_hour:+.0f}/h"
        ]
    else:
        assert projected == []


# ------------------------------------------------------------------ plan, idle, holders
def test_the_report_idle_what_if_counts_what_idle_counts(sims: dict[str, SimulationResult]) -> None:
    path = sims["blocking"].path
    ds = cs.open_dataset(path)
    fig = charts.idle_distribution(ds, timeout=300)
    [label] = [t.get_text() for t in fig.legends[0].get_texts() if "what-if" in t.get_text()]
    closed, judged = (int(n) for n in re.findall(r"closes (\d+) of (\d+) normal", label)[0])
    peak = peak_capture(timeline(ds), None)  # the chart is drawn at the peak capture
    assert peak is not None
    report = idle(ds, at=peak["ts"], timeouts=[300])  # type: ignore[arg-type]
    row = report.timeouts.filter(pl.col("timeout") == 300).row(0, named=True)
    assert row["would_close_now"] == closed
    blocked = report.excluded.filter(pl.col("role") == "blocked")["clients"].sum()
    assert blocked > 0 and judged == report.groups["clients"].sum()  # blocked never judged
    cap = build_model(ds).server().timeline.filter(pl.col("has_clients")).tail(1)
    rows = snapshot_clients(ds, cap["capture_id"].to_list()).collect()
    assert timeout_what_if(rows, 300)[1] == rows.filter(pl.col("role") == "normal").height


def test_diagnose_names_the_holders_top_shows(sims: dict[str, SimulationResult]) -> None:
    """The largest holder is the group `top` ranks first, and the leaking group (not the largest
    here) is named as the leak, each with the count `top` shows."""
    path = sims["incident"].path
    exhaustion = next(f for f in diagnose(path).findings if f.kind == "exhaustion")
    shown = top(path, "group")
    first = shown.sort(["clients", "group"], descending=[True, False]).row(0, named=True)
    leaking = exhaustion.evidence["leaking_group"]
    assert exhaustion.evidence["largest_group"] == first["group"] != leaking
    said = re.search(r"largest holder at the end was (.+) with (\d+) connections; the leaking (.+) "
                     r"held (\d+)\.", exhaustion.summary)  # fmt: skip
    assert said is not None, exhaustion.summary
    assert (said.group(1), int(said.group(2))) == (first["group"], first["clients"])
    held = shown.filter(pl.col("group") == leaking)["clients"].item()
    assert (said.group(3), int(said.group(4))) == (leaking, held)
    assert exhaustion.group == leaking  # the group to act on


def test_idle_p50_is_one_number_in_top_and_idle(sims: dict[str, SimulationResult]) -> None:
    path = sims["leak"].path
    by_top = top(path, "group").filter(pl.col("group") == "orders-svc")["idle_p50"].item()
    by_idle = idle(path).groups.filter(pl.col("group") == "orders-svc")["idle_p50"].item()
    assert by_top == by_idle


# ------------------------------------------------------------------ leaks
def test_leaks_says_which_captures_it_left_out(sims: dict[str, SimulationResult]) -> None:
    report = leaks(sims["incident"].path)
    left = dict(report.left_out)
    assert left.get("at or after the server first reached maxclients", 0) > 0
    listed = (
        build_model(sims["incident"].path).server().timeline.filter(pl.col("has_clients")).height
    )
    assert report.captures + sum(left.values()) == listed  # every capture with clients, accounted
    shown = cli("leaks", str(sims["incident"].path))
    assert "left out" in shown and "reached maxclients" in shown


def test_idle_over_600_last_is_read_at_the_last_capture(sims: dict[str, SimulationResult]) -> None:
    path = sims["leak"].path
    report = leaks(path)
    row = report.groups.filter(pl.col("group") == "api-pool").row(0, named=True)
    last = build_model(path).server().timeline.filter(pl.col("has_clients")).tail(1)
    rows = snapshot_clients(cs.open_dataset(path), last["capture_id"].to_list()).collect()
    expected = rows.filter((pl.col("group") == "api-pool") & (pl.col("idle") > 600)).height
    assert row["idle_over_600_last"] == expected


def test_a_leak_began_at_its_oldest_surviving_connection(sims: dict[str, SimulationResult]) -> None:
    path = sims["leak"].path
    leak = next(f for f in diagnose(path).findings if f.kind == "leak")
    row = leaks(path).leaking.row(0, named=True)
    assert leak.first_seen == row["first_survivor_born"]
    assert f"{row['first_survivor_born']:%Y-%m-%d %H:%M:%S} UTC" in leak.summary


def test_an_unnamed_source_has_one_spelling(sims: dict[str, SimulationResult]) -> None:
    path = sims["mixed"].path
    unnamed = next(t.group for t in sims["mixed"].leaking if t.group.startswith(UNNAMED))
    assert unnamed == f"{UNNAMED} 10.0.6.10"
    assert unnamed in set(leaks(path).leaking["group"].to_list())
    assert unnamed in {d.group for d in forecast(path).drivers}
    leak = next(f for f in diagnose(path).findings if f.group == unnamed)
    assert "unknown@" not in leak.summary + " ".join(leak.remediation)
    assert "connects from 10.0.6.10 without a client name" in leak.remediation[0]
    names = top(path, "name")["name"].to_list()
    assert UNNAMED in names and "(no name)" not in names and "(none)" not in names


@pytest.mark.parametrize("seed", range(6))
def test_a_cycling_pool_is_never_a_driver(tmp_path: Path, seed: int) -> None:
    """The batch pool of 'mixed' cycles: it counts at its peak in the steady part, however its
    last third happens to lean (seeds 4 and 5 projected it at +13/h)."""
    r = cs.simulate("mixed", tmp_path / "m", seed=seed)
    f = forecast(r.path)
    assert {d.group for d in f.drivers} == {t.group for t in r.leaking}


@pytest.mark.parametrize("scenario", ["mixed", "leak", "blocking"])
def test_the_report_recommends_the_limit_plan_recommends(
    sims: dict[str, SimulationResult], scenario: str, tmp_path: Path
) -> None:
    path = sims[scenario].path
    planned = json.loads(cli("plan", str(path), "--json"))
    md = cs.report(path, tmp_path / "r").markdown.read_text()
    settings = md[md.index("## Recommended settings") :]
    row = next(line for line in settings.splitlines() if line.startswith("| maxclients |"))
    assert f"**{planned['recommended_maxclients']}**" in row
    assert f"peak {planned['healthy_peak']}" in row


# ------------------------------------------------------------------ the report vs --json, everywhere
def _every_dataset() -> list[str]:
    from clientscope.simulation import SCENARIOS

    return [*SCENARIOS, "fixture:example"]


@pytest.fixture(scope="module")
def every(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from conftest import FIXTURES

    root = tmp_path_factory.mktemp("every")
    out = {"fixture:example": FIXTURES / "datasets" / "example"}
    for name in _every_dataset()[:-1]:
        out[name] = cs.simulate(name, root / name, seed=3).path
    return out


@pytest.mark.parametrize("name", _every_dataset())
def test_every_figure_the_report_shows_is_the_one_json_gives(
    every: dict[str, Path], name: str, tmp_path: Path
) -> None:
    """Time to maxclients, peak, largest holder, leak rates, the plan's limit and the idle
    what-if: the report (Markdown) against the commands' --json, on every simulation scenario
    and the committed fixture dataset."""
    path = every[name]
    md = cs.report(path, tmp_path / "r").markdown.read_text()
    card = {m[1]: m[2] for m in re.finditer(r"^- \*\*(.+?):\*\* (.+)$", md, re.M)}
    diagnosis = json.loads(cli("diagnose", str(path), "--json"))
    shown_instance = re.search(r"^_(\S+)", md, re.M)
    assert shown_instance is not None
    inst = shown_instance[1]
    # the peak: the card's, as diagnose counts it for that server
    own = json.loads(cli("diagnose", str(path), "--instance", inst, "--json"))
    assert card["Peak clients vs maxclients"].startswith(f"{own['peak_used']} / ")
    # time to maxclients: the card's is forecast's for that server
    f = json.loads(cli("forecast", str(path), "--instance", inst, "--json"))
    if f["verdict"] == "will_exhaust" and f["eta_maxclients"]:
        from datetime import datetime

        left = datetime.fromisoformat(f["eta_maxclients"]) - datetime.fromisoformat(f["now"])
        assert card["Time to exhaustion"].startswith(human_duration(left))
    else:
        assert not re.match(r"\d", card["Time to exhaustion"]), card["Time to exhaustion"]
    # findings (leak rates, the largest holder): the report's are diagnose's, word for word
    for finding in diagnosis["findings"]:
        assert finding["title"] in md.replace("\\", "")
        assert finding["summary"][:120] in md.replace("\\", "")
    # the plan's limit
    planned = json.loads(cli("plan", str(path), "--instance", inst, "--json"))
    settings = md[md.index("## Recommended settings") :]
    row = next(line for line in settings.splitlines() if line.startswith("| maxclients |"))
    assert f"**{planned['recommended_maxclients']}**" in row
    # every maxclients and timeout a finding advises is the plan's (no second rule of thumb)
    advised = [step for finding in own["findings"] for step in finding["remediation"]]
    limits = {int(n) for step in advised for n in re.findall(r"CONFIG SET maxclients (\d+)", step)}
    timeouts = {int(n) for step in advised for n in re.findall(r"CONFIG SET timeout (\d+)", step)}
    assert limits <= {planned["recommended_maxclients"]}, advised
    assert timeouts <= {planned["suggested_timeout"]}, advised
    idled = json.loads(cli("idle", str(path), "--instance", inst, "--json"))
    assert idled["suggested_timeout"] == planned["suggested_timeout"]  # idle sized it alike
    assert idled["longest_reuse_gap_s"] == planned["longest_reuse_gap_s"]
    if len(cs.open_dataset(path).instances()) == 1:  # the report's findings are that server's
        assert {int(n) for n in re.findall(r"CONFIG SET maxclients (\d+)", md)} <= limits | {
            planned["recommended_maxclients"]
        }
        assert {int(n) for n in re.findall(r"CONFIG SET timeout (\d+)", md)} <= {
            planned["suggested_timeout"]
        }
    # the idle what-if of the idle chart: what idle counts at that capture
    ds = cs.open_dataset(path)
    fig = charts.idle_distribution(ds, instance=inst, timeout=300)
    labels = [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []
    said = [lab for lab in labels if "what-if" in lab]
    if said:
        closed, judged = (int(n) for n in re.findall(r"closes (\d+) of (\d+) normal", said[0])[0])
        peak = peak_capture(timeline(ds), inst)
        assert peak is not None
        report = idle(ds, at=peak["ts"], instance=inst, timeouts=[300])  # type: ignore[arg-type]
        assert report.timeouts.filter(pl.col("timeout") == 300)["would_close_now"].item() == closed
        assert report.groups["clients"].sum() == judged


def test_every_analysis_reads_a_model_built_once_as_it_reads_the_dataset(
    sims: dict[str, SimulationResult],
) -> None:
    from polars.testing import assert_frame_equal

    path = sims["mixed"].path
    ds = cs.open_dataset(path)
    model = build_model(ds)
    assert_frame_equal(cs.top_from(model, "group"), top(ds, "group"))
    assert cs.idle_from(model).to_dict() == idle(ds).to_dict()  # timeouts read lifecycles
    assert_frame_equal(cs.summary_from(model).snapshot, cs.summary(ds).snapshot)
    assert cs.leaks_from(model).to_dict() == leaks(ds).to_dict()
    assert cs.diagnose_from(model).to_dict() == diagnose(ds).to_dict()
    assert cs.plan_from(model).to_dict() == cs.plan(ds).to_dict()
    assert model.server().require_forecast() == forecast(ds)
