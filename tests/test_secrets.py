"""Secrets: a password never reaches the dataset or the screen, whoever echoes it back.

The servers here are the fake RESP servers of `test_hostile_servers` (loopback only);
`--via` commands are small shell scripts in the test's folder.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from clientscope.capture import collect, parse_target, via_target
from clientscope.capture.redact import Scrubber, redact_url
from clientscope.dataset import open_dataset
from clientscope.errors import ConfigError
from test_collect_faults import assert_secret_absent
from test_hostile_servers import CLIENT_LINE, FAST, bulk, fake_server, run_cli

SECRET = "Echo-me-n0t-5ecret"


def echo_auth(command: tuple[str, ...]) -> bytes:
    """What a server with AUTH renamed away answers (Redis 7's wording): it quotes the args."""
    quoted = " ".join(f"'{arg}'" for arg in command[1:])[:128]
    return b"-ERR unknown command 'AUTH', with args beginning with: %s \r\n" % quoted.encode()


def assert_nowhere(root: Path, texts: list[str], *secrets: str) -> None:
    """Neither in any file under `root`, nor in any decoded table value, nor in `texts`."""
    for secret in secrets:
        for text in texts:
            assert secret not in text
        assert_secret_absent(root, secret)


# ------------------------------------------------------------- servers that echo


def test_a_server_echoing_auth_never_gets_the_password_stored_or_printed(tmp_path: Path) -> None:
    """Before: the echo was kept in raw.notes (as TIME 'denied') and printed as a warning."""
    with fake_server(AUTH=echo_auth) as srv:
        url = f"redis://:{SECRET}@127.0.0.1:{srv.port}"
        result = collect([url], tmp_path / "lib", interval=0.2, count=2, timeouts=FAST)
        shown = run_cli("collect", srv.url, "-o", str(tmp_path / "cli"), "--count", "2",
                        "--interval", "200ms", env={"REDISCLI_AUTH": SECRET})  # fmt: skip
        as_json = run_cli("collect", srv.url, "-o", str(tmp_path / "json"), "--count", "1",
                          "--interval", "200ms", "--json", env={"REDISCLI_AUTH": SECRET})  # fmt: skip
    rows = open_dataset(tmp_path / "lib").raw.collect()
    assert rows["error_kind"].to_list() == ["auth", "auth"]  # not "denied": no command was refused
    assert rows["error_message"][0] == (
        "ERR unknown command 'AUTH', with args beginning with: '***' "
        f"(connecting to 127.0.0.1:{srv.port})"
    )
    assert result.targets[0].denied == ()
    assert shown.returncode == 5 and as_json.returncode == 5, shown.stderr  # auth: exit 5
    assert "auth 2" in shown.stdout and as_json.summary()["failed"] == 1
    texts = [shown.stdout, shown.stderr, as_json.stdout, as_json.stderr, repr(result)]
    for out in ("lib", "cli", "json"):
        assert_nowhere(tmp_path / out, texts, SECRET)


def test_a_long_password_cut_short_in_the_echo_is_hidden_too() -> None:
    long_secret = "L0ng-" + "x7" * 100  # the server quotes only its first 120-odd characters
    scrubber = Scrubber([long_secret])
    echoed = echo_auth(("AUTH", long_secret)).decode()
    assert long_secret not in echoed and long_secret[:100] in echoed
    scrubbed = scrubber.text(echoed)
    assert long_secret[:8] not in scrubbed
    assert scrubbed == "-ERR unknown command 'AUTH', with args beginning with: '*** \r\n"


def test_a_password_in_a_client_name_is_hidden_in_the_stored_client_list(tmp_path: Path) -> None:
    """An application that names its connection with its URL puts the password in CLIENT LIST."""
    named = CLIENT_LINE.replace(b"name=app", f"name=redis://:{SECRET}@cache:6379".encode())
    with fake_server(CLIENT_LIST=bulk(named)) as srv:
        url = f"redis://:{SECRET}@127.0.0.1:{srv.port}"
        collect([url], tmp_path / "ds", interval=0.2, count=1, timeouts=FAST)
    rows = open_dataset(tmp_path / "ds").raw.collect()
    assert rows["ok"].all()
    assert b"name=redis://:***@cache:6379 " in rows["client_list"][0]
    assert open_dataset(tmp_path / "ds").clients.collect()["name"].to_list() == [
        "redis://:***@cache:6379"
    ]
    assert_nowhere(tmp_path / "ds", [], SECRET)


def test_notes_stay_json_when_the_password_holds_quotes(tmp_path: Path) -> None:
    secret = 'q"uo\\te-Pw'
    with fake_server(AUTH=b"+OK\r\n", CONFIG_GET=echo_auth) as srv:
        target = parse_target(f"redis://127.0.0.1:{srv.port}", password=secret)
        collect([target], tmp_path / "ds", interval=0.2, count=1, timeouts=FAST,
                config_names=["maxclients", secret])  # fmt: skip
    notes = json.loads(open_dataset(tmp_path / "ds").raw.collect()["notes"][0])
    assert notes["denied"]["CONFIG GET"].endswith("'GET' 'maxclients' '***'")
    assert_nowhere(tmp_path / "ds", [], secret, json.dumps(secret)[1:-1])


def test_a_via_command_that_echoes_its_arguments_is_scrubbed(tmp_path: Path) -> None:
    wrapper = tmp_path / "echoing-cli"
    wrapper.write_text('#!/bin/sh\necho "ERR cannot run: $* (auth $REDISCLI_AUTH)"\nexit 1\n')
    wrapper.chmod(0o755)
    target = via_target(f"{wrapper} -a {SECRET}-argv", password=f"{SECRET}-env", env={})
    collect([target], tmp_path / "ds", interval=0.2, count=1, timeouts=FAST)
    message = open_dataset(tmp_path / "ds").raw.collect()["error_message"][0]
    assert message == "TIME: ERR cannot run: -a *** TIME (auth ***)"
    assert_nowhere(tmp_path / "ds", [message], SECRET)


# ----------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "shown", "password"),
    [
        ("redis://user:pa@ss@host:6379", "redis://user:***@host:6379", "pa@ss"),
        ("redis://:SECRET/x@host", "redis://:***@host", "SECRET/x"),
        ("redis://:p:w@h:1/2", "redis://:***@h:1/2", "p:w"),
        ("redis://u:p#q?r@h", "redis://u:***@h", "p#q?r"),
        ("redis://:a://b@h:7", "redis://:***@h:7", "a://b"),
        ("rediss://u:%40enc%2F@h:6380", "rediss://u:***@h:6380", "@enc/"),
        ("redis://:pw@[::1]:6379/3", "redis://:***@[::1]:6379/3", "pw"),
        ("redis://h:6379", "redis://h:6379", None),
        ("redis://u:@h", "redis://u:***@h", None),
        ("unix://:pw@/run/redis@6379.sock", "unix://:***@/run/redis@6379.sock", "pw"),
        ("unix:///run/redis@6379.sock", "unix:///run/redis@6379.sock", None),
    ],
)
def test_url_passwords_are_read_and_redacted_whatever_they_hold(
    url: str, shown: str, password: str | None
) -> None:
    """Before: `user:pa@ss@host` showed `ss@host`, `:SECRET/x@host` showed everything."""
    assert redact_url(url) == shown
    target = parse_target(url, env={})
    assert target.password == password
    assert "***" not in target.origin and (password is None or password not in target.origin)


def test_a_lone_userinfo_is_hidden_as_redis_cli_reads_it_as_the_password() -> None:
    assert redact_url("redis://Secret-only@h:1") == "redis://***@h:1"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:SECRET/x@host:notaport",
        "http://u:SECRET/x@host",
        "redis://u:SECRET@x@host/db-one",
        "unix://:SECRET/x@",
    ],
)
def test_errors_about_a_url_never_show_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_target(url, env={})
    assert "SECRET" not in str(caught.value) and "***" in str(caught.value)


# ----------------------------------------------------------------- --via


@pytest.mark.parametrize(
    ("command", "instance", "secrets"),
    [
        ("redis-cli -h H -a PW -p P", "H:P", ["PW"]),
        ("redis-cli -a PW -h cache-1", "cache-1", ["PW"]),
        ("redis-cli --user ops --pass PW -p 6380", "127.0.0.1:6380", ["PW"]),
        ("redis-cli -u redis://ops:PW@db.internal:6380/0", "db.internal:6380", ["PW"]),
        ("redis-cli --tls --cacert ca.pem --sni PW-not-a-host -h h", "h", []),
        ("valkey-cli -s /run/valkey.sock -a PW", "/run/valkey.sock", ["PW"]),
        ("kubectl exec -n redis redis-master-0 -- redis-cli -a PW", "redis-master-0", ["PW"]),
        ("kubectl --token PW -n ns exec -it redis-0 -c redis -- redis-cli", "redis-0", ["PW"]),
        ("kubectl exec --namespace=ns pod/redis-1 -- redis-cli --pass=PW", "pod/redis-1", ["PW"]),
        ("docker exec -it -u redis -e X=PW-env cache redis-cli -a PW", "cache", ["PW"]),
        ("docker compose exec redis redis-cli", "redis", []),
        ("ssh -i key.pem -p 2222 -o User=ops cache-1 redis-cli -a PW", "cache-1", ["PW"]),
        ("sshpass -p PW ssh cache-2 redis-cli", "cache-2", ["PW"]),
        ("sudo -u redis redis-cli -p 6380 -a PW", "127.0.0.1:6380", ["PW"]),
        ("env REDISCLI_AUTH=PW redis-cli -h h2", "h2", ["PW"]),
        ("REDISCLI_AUTH=PW redis-cli", "redis-cli", ["PW"]),
        ("timeout 10 redis-cli -p 7000", "127.0.0.1:7000", []),
        ("sh -c 'exec redis-cli -a PW -h inner \"$@\"' redis-cli", "inner", ["PW"]),
        ("./redis-cli-wrapper", "redis-cli-wrapper", []),
        ("ssh cache-3 redis-cli", "cache-3", []),
        ("my-wrapper --secret-ish PW node-9 redis-cli", "node-9", []),
        ("my-wrapper --password PW", "my-wrapper", ["PW"]),
    ],
)
def test_via_names_never_take_an_option_value(
    command: str, instance: str, secrets: list[str]
) -> None:
    """Before: `redis-cli -h H -a PW -p P` was named `PW` (a folder, on screen, in exports)."""
    target = via_target(command, env={})
    assert target.instance == instance
    assert "PW" not in target.instance
    assert [s for s in target.secrets if s == "PW"] == secrets
    for secret in secrets:
        assert secret not in target.origin.replace("PW-", "")
    assert len(shlex.split(target.origin.removeprefix("via: "))) == len(shlex.split(command)) or (
        "sh -c" in command  # the script is one word, its own words redacted inside
    )


def test_a_via_target_given_a_name_keeps_it() -> None:
    assert via_target("redis-cli -a PW", instance="primary", env={}).instance == "primary"


def test_the_environment_password_is_a_secret_of_every_target() -> None:
    url_target = parse_target("redis://h:1", env={"REDISCLI_AUTH": "from-env-pw"})
    via = via_target("redis-cli -h h", env={"REDISCLI_AUTH": "from-env-pw"})
    assert url_target.secrets == ("from-env-pw",) == via.secrets
    assert "from-env-pw" not in repr(url_target) + repr(via)
