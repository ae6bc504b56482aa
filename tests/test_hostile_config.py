"""Hostile rules files and deployment specs (issue 13): a clear `ConfigError`, bounded time and memory.

Each case names the file, the line and field where it can, the value seen and what
to write instead; and one check decides a value whether it came from a file or an
option (`--headroom`, `--what-if`) or was built in code.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clientscope.analysis import load_rules, load_spec, plan
from clientscope.analysis.alerts import Rule
from clientscope.analysis.capacity import AppSpec, DeploymentSpec
from clientscope.config import MAX_BYTES, load_yaml
from clientscope.errors import ConfigError

SPECS = Path(__file__).resolve().parents[1] / "fixtures" / "specs"
RULE = "rules:\n  - name: R\n    metric: used\n    threshold: {threshold}\n    for: {for_}\n"
SPEC = "buffer: {buffer}\nheadroom: {headroom}\napps:\n  - name: api\n    replicas: {replicas}\n    pool_size: 10\n"


def _laughs(levels: int = 9) -> list[str]:
    """Anchors a0..a8, each a list of nine aliases of the one before: 9^9 strings once expanded."""
    lines = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return lines


BOMBS = {
    "rules": "laughs: [" + ", ".join(_laughs()) + "]\n"
    "rules:\n  - {name: R, metric: used, threshold: 1, summary: *a8}\n",
    # the anchors inside the app's name: the spec's own fields, no unknown key to stop at first
    "spec": "apps:\n  - name: [" + ", ".join(_laughs()) + "]\n    replicas: 1\n    pool_size: 1\n",
}


def _write(tmp_path: Path, text: str | bytes, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# ------------------------------------------------------------------ bounded reading
@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_billion_laughs_is_refused_in_bounded_memory_and_time(tmp_path: Path, kind: str) -> None:
    """Before: 37 s and 3.0 GB for the rules file; the spec ran past 6 GB."""
    path = _write(tmp_path, BOMBS[kind])
    loader = "load_rules" if kind == "rules" else "load_spec"
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB of address space
        from clientscope.analysis import {loader} as load
        from clientscope.errors import ConfigError
        try:
            load({str(path)!r})
        except ConfigError as exc:
            print(exc)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"{path}, line " in run.stdout
    assert "its aliases expand it past 4,194,304 nodes and characters" in run.stdout
    assert "write the values out" in run.stdout


def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "rules: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(
        ConfigError, match=r"config.yaml, line 1: nested more than 32 deep; .* check the brackets"
    ):
        load_rules(path)


def test_aliases_may_not_nest_past_the_depth_either(tmp_path: Path) -> None:
    """Each anchor nested 20 deep, each inside the next: 60 deep once expanded."""
    nest = "[" * 20 + "{}" + "]" * 20
    text = f"a: &a {nest.replace('{}', '1')}\nb: &b {nest.replace('{}', '*a')}\nrules: {nest.replace('{}', '*b')}\n"
    with pytest.raises(ConfigError, match=r"line 2: its aliases nest it more than 32 deep"):
        load_rules(_write(tmp_path, text))


def test_a_structure_that_contains_itself_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 1: an alias refers to the anchor it is inside of"):
        load_rules(_write(tmp_path, "rules: &r [*r]\n"))


def test_one_big_string_aliased_many_times_is_refused(tmp_path: Path) -> None:
    text = "x: &s " + "A" * 500_000 + "\nrules: [" + ", ".join(["*s"] * 200) + "]\n"
    with pytest.raises(ConfigError, match="aliases expand it past"):
        load_rules(_write(tmp_path, text))


def test_a_few_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = (
        "defaults: &d {metric: used, op: '>', for: 5m, severity: critical}\n"
        "rules:\n"
        "  - <<: *d\n    name: A\n    threshold: 10\n"
        "  - <<: *d\n    name: B\n    threshold: 20\n    severity: info\n"
    )
    a, b = load_rules(_write(tmp_path, text))
    assert (a.metric, a.for_s, a.severity, b.severity, b.threshold) == (
        "used",
        300.0,
        "critical",
        "info",
        20.0,
    )


def test_non_utf8_names_the_line_and_the_mend(tmp_path: Path) -> None:
    path = _write(tmp_path, "rules:\n  - name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(
        ConfigError,
        match=r"config.yaml, line 2: not UTF-8 text \(byte 0xe9\); save the file as UTF-8",
    ):
        load_rules(path)


def test_a_control_character_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "rules:\n  - name: a\x00b\n")
    with pytest.raises(ConfigError, match=r"line 2: not valid YAML: the control character U\+0000"):
        load_rules(path)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "apps:\n  - name: api\n    replicas: [1\n")
    with pytest.raises(
        ConfigError, match=r"config.yaml, line 4: not valid YAML: .*fix the deployment spec there"
    ):
        load_spec(path)


def test_a_huge_file_is_not_read(tmp_path: Path) -> None:
    path = _write(tmp_path, "rules: []\n" + "#" * MAX_BYTES)
    with pytest.raises(
        ConfigError,
        match=r"larger than 1,024 KiB; alert rules files are a few KB: is this the right file\?",
    ):
        load_rules(path)


def test_a_key_given_twice_is_an_error_not_last_wins(tmp_path: Path) -> None:
    text = "rules:\n  - metric: used\n    threshold: 1\n    threshold: 1000\n"
    with pytest.raises(
        ConfigError, match=r"line 4: key 'threshold' is given twice \(lines 3 and 4\).*keep one"
    ):
        load_rules(_write(tmp_path, text))


def test_the_fixtures_still_load() -> None:
    assert len(load_rules(SPECS / "alerts.yaml")) == 3
    assert [a.name for a in load_spec(SPECS / "deployment.yaml").apps] == [
        "api",
        "worker",
        "orders",
    ]
    assert load_yaml(SPECS / "deployment.yaml", "spec")["apps"][0].lines["replicas"] == 10


# ------------------------------------------------------------------ values: rules
@pytest.mark.parametrize(
    ("threshold", "shown"), [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf"), ("1.0e+999", "inf"), ("1e999", "'1e999'"),
                             ("true", "True"), ("abc", "'abc'"), ("[1, 2]", "[1, 2]")],
)  # fmt: skip
def test_threshold_must_be_a_finite_number(tmp_path: Path, threshold: str, shown: str) -> None:
    path = _write(tmp_path, RULE.format(threshold=threshold, for_="5m"))
    want = (
        f"{path}: rule 1: field 'threshold' is {shown} (line 4): threshold must be a "
        "finite number, such as 0.9"
    )
    with pytest.raises(ConfigError, match="^" + _literal(want) + "$"):
        load_rules(path)


@pytest.mark.parametrize("for_", ["-5", "-5m", "99999d", ".inf", ".nan", "true", "5 minutes", "²s"])
def test_for_must_be_a_duration_from_0_to_30_days(tmp_path: Path, for_: str) -> None:
    path = _write(tmp_path, RULE.format(threshold=1, for_=for_))
    with pytest.raises(
        ConfigError,
        match=r"rule 1: field 'for' is .* \(line 5\): for is (not a duration|out of range): write it like 300, 90s, 5m, 1h30m or 2d, at most 30d$",
    ):
        load_rules(path)


def test_a_rule_built_in_code_gets_the_same_checks() -> None:
    with pytest.raises(ConfigError, match=r"^rule 'R': threshold nan must be a finite number"):
        Rule("R", "used", ">", float("nan"))
    with pytest.raises(ConfigError, match=r"^rule 'R': for_s -1\.0 is out of range"):
        Rule("R", "used", ">", 1, for_s=-1.0)
    with pytest.raises(ConfigError, match=r"^rule 'R': op '=>' must be one of > >= < <= == !="):
        Rule("R", "used", "=>", 1)


def test_max_gap_is_checked_like_for() -> None:
    from clientscope.analysis import alerts

    with pytest.raises(ConfigError, match=r"^max_gap '-5m' is not a duration"):
        alerts(Path("no-such-dataset"), max_gap="-5m")


def test_a_name_or_summary_that_is_not_text_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "rules:\n  - {name: [a, b], metric: used, threshold: 1}\n")
    with pytest.raises(
        ConfigError, match=r"rule 1: field 'name' is \['a', 'b'\] \(line 2\): name must be text"
    ):
        load_rules(path)


# ------------------------------------------------------------------ values: deployment spec
@pytest.mark.parametrize(
    ("buffer", "shown"), [("abc", "'abc'"), (".inf", "inf"), (".nan", "nan"), ("2.5", "2.5"),
                          ("-1", "-1"), ("true", "True"), ("10000000", "10000000")],
)  # fmt: skip
def test_buffer_must_be_a_whole_number(tmp_path: Path, buffer: str, shown: str) -> None:
    path = _write(tmp_path, SPEC.format(buffer=buffer, headroom=0.25, replicas=2))
    want = (
        f"{path}: field 'buffer' is {shown} (line 1): buffer must be a whole number from 0 "
        "to 1,000,000"
    )
    with pytest.raises(ConfigError, match="^" + _literal(want) + "$"):
        load_spec(path)


@pytest.mark.parametrize(
    ("headroom", "shown"), [("-5", "-5"), ("11", "11"), (".nan", "nan"), ("x", "'x'")]
)
def test_headroom_in_a_spec_is_checked_like_the_option(
    tmp_path: Path, headroom: str, shown: str
) -> None:
    rule = "is a share on top of the peak: give 0 to 10 (0.25 = 25 %)"
    path = _write(tmp_path, SPEC.format(buffer=50, headroom=headroom, replicas=2))
    want = f"{path}: field 'headroom' is {shown} (line 2): headroom {rule}"
    with pytest.raises(ConfigError, match="^" + _literal(want) + "$"):
        load_spec(path)
    with pytest.raises(ConfigError, match="^" + _literal(f"--headroom -5 {rule}") + "$"):
        plan(Path("no-such-dataset"), headroom=-5)  # refused before the dataset is opened


@pytest.mark.parametrize(
    ("replicas", "shown"), [(str(2**63 - 1), str(2**63 - 1)), ("true", "True"), ("2.5", "2.5"),
                            ("-1", "-1"), ("'4'", "'4'")],
)  # fmt: skip
def test_replicas_must_be_a_plausible_whole_number(
    tmp_path: Path, replicas: str, shown: str
) -> None:
    path = _write(tmp_path, SPEC.format(buffer=50, headroom=0.25, replicas=replicas))
    want = (
        f"{path}: app 1 (api): field 'replicas' is {shown} (line 5): replicas must be a whole "
        "number from 0 to 100,000"
    )
    with pytest.raises(ConfigError, match="^" + _literal(want) + "$"):
        load_spec(path)


def test_what_if_replicas_are_checked_like_the_spec() -> None:
    want = "--what-if api=9223372036854775807: replicas must be a whole number from 0 to 100,000"
    with pytest.raises(ConfigError, match="^" + _literal(want) + "$"):
        plan(Path("no-such-dataset"), SPECS / "deployment.yaml", what_if={"api": 2**63 - 1})
    with pytest.raises(ConfigError, match=r"^--what-if api=True: replicas must be"):
        plan(Path("no-such-dataset"), SPECS / "deployment.yaml", what_if={"api": True})


def test_duplicate_app_names_are_an_error(tmp_path: Path) -> None:
    text = (
        "apps:\n  - {name: api, replicas: 2, pool_size: 10}\n  - {name: worker, replicas: 1, pool_size: 5}\n"
        "  - {name: api, match: api-batch, replicas: 1, pool_size: 5}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"config.yaml: app 3 \(line 4\): name 'api' is app 1's too; give each app its own name",
    ):
        load_spec(_write(tmp_path, text))


def test_a_spec_built_in_code_gets_the_same_checks() -> None:
    with pytest.raises(ConfigError, match=r"^app 'api': replicas True must be a whole number"):
        AppSpec("api", "api", True, 2, 10)
    with pytest.raises(ConfigError, match=r"^headroom -5 is a share on top of the peak"):
        DeploymentSpec((AppSpec("api", "api", 1, 1, 10),), headroom=-5)
    with pytest.raises(ConfigError, match=r"^app name\(s\) 'api' used twice"):
        DeploymentSpec((AppSpec("api", "api", 1, 1, 10), AppSpec("api", "b", 1, 1, 10)))


def _literal(text: str) -> str:
    return re.escape(text)
