"""`upgrade`: datasets written by clientscope 0.1 (tests/fixtures/hive-0.1, made by 0.1 itself)
become Delta tables in place, every row and byte kept, the 0.1 files kept aside.

The expected numbers are read from the 0.1 Parquet files here, directly (`old_table`), not
through the code under test."""

from __future__ import annotations

import json
import shutil
import urllib.parse
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import clientscope.upgrade as upgrade_module
from clientscope.dataset import (
    COLLECT_LOCK,
    SCHEMAS,
    TABLE_NAMES,
    Dataset,
    DatasetWarning,
    collecting,
    commit_table,
    exclusive,
    mend,
    open_dataset,
)
from clientscope.errors import DatasetError
from clientscope.upgrade import UpgradeResult, upgrade

FIXTURES = Path(__file__).parent / "fixtures" / "hive-0.1"
INSTANCES = ("../x", "[/]prod\nFLUSHALL", "redis-b:6379", "ü-cache")  # as make.sh named them
UNPARSED = 3  # captures of the loop-valkey import whose parsed files make.sh deleted
NEW_LOCKS = frozenset({".write.lock", COLLECT_LOCK})  # any writer of this version makes them


def copy(name: str, tmp_path: Path) -> Path:
    """A copy of one 0.1 fixture dataset, to upgrade."""
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def old_files(root: Path, table: str) -> list[Path]:
    return sorted(
        p
        for p in (root / table).glob("instance=*/date=*/*.parquet")
        if not p.name.startswith(".tmp-")
    )


def old_table(root: Path, table: str) -> pl.DataFrame:
    """A table of a 0.1 dataset as its files hold it: the instance from each file's folder."""
    schema = SCHEMAS[table]
    frames = [
        pl.read_parquet(path, hive_partitioning=False)
        .with_columns(pl.lit(urllib.parse.unquote(path.parent.parent.name[9:])).alias("instance"))
        .select(list(schema))
        .cast(pl.Schema(schema))
        for path in old_files(root, table)
    ]
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def read(root: Path) -> Dataset:
    """`open_dataset`, whether or not it warns about the captures 0.1 never parsed (it does
    not for a while after a commit: a collector may be parsing them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        return open_dataset(root)


def new_table(root: Path, table: str) -> pl.DataFrame:
    """A table of the upgraded dataset as any Delta reader sees it."""
    schema = SCHEMAS[table]
    return pl.scan_delta(str(root / table)).select(list(schema)).cast(pl.Schema(schema)).collect()


def in_order(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort([c for c, t in frame.schema.items() if not t.is_nested()])


def tree(root: Path, *, skip: frozenset[str] = frozenset()) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes), but those named in `skip`."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


@dataclass(frozen=True)
class Upgraded:
    root: Path
    result: UpgradeResult
    said: list[str]


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> Upgraded:
    """The `dataset` fixture, upgraded once for the tests that only read it."""
    root = copy("dataset", tmp_path_factory.mktemp("upgraded"))
    said: list[str] = []
    return Upgraded(root, upgrade(root, progress=said.append), said)


# ------------------------------------------------------------------ nothing lost
@pytest.mark.parametrize("table", TABLE_NAMES)
def test_every_row_of_every_table_is_kept(upgraded: Upgraded, table: str) -> None:
    old = old_table(FIXTURES / "dataset", table)
    assert_frame_equal(in_order(new_table(upgraded.root, table)), in_order(old))
    assert upgraded.result.rows[table] == old.height


def test_raw_bytes_are_kept_exactly(upgraded: Upgraded) -> None:
    columns = ["capture_id", "instance", "client_list", "info", "content_sha256"]
    old = old_table(FIXTURES / "dataset", "raw").select(columns).sort("capture_id")
    new = new_table(upgraded.root, "raw").select(columns).sort("capture_id")
    assert old.height == 1 + UNPARSED  # the ü-cache import and the unparsed loop-valkey one
    assert new.rows() == old.rows()


def test_instance_names_round_trip_exactly(upgraded: Upgraded) -> None:
    assert tuple(read(upgraded.root).instances()) == INSTANCES
    captures = pl.scan_delta(str(upgraded.root / "captures")).select("instance").collect()
    raw = pl.scan_delta(str(upgraded.root / "raw")).select("instance").collect()
    assert tuple(sorted(captures["instance"].unique())) == INSTANCES
    assert sorted(raw["instance"].unique()) == ["redis-b:6379", "ü-cache"]
    assert upgraded.result.instances == INSTANCES
    assert not (upgraded.root.parent / "x").exists()  # '../x' is a name, not a path


def test_unfinished_write_is_not_read(upgraded: Upgraded) -> None:
    (tmp,) = FIXTURES.glob("dataset/raw/*/*/.tmp-*.parquet")
    raw = new_table(upgraded.root, "raw")
    assert raw["capture_id"].is_unique().all()  # the .tmp- file is a copy of a real raw file
    assert raw.height == sum(
        pl.read_parquet(p).height for p in old_files(FIXTURES / "dataset", "raw")
    )
    assert upgraded.result.backup is not None
    kept = upgraded.result.backup / tmp.relative_to(FIXTURES / "dataset")
    assert kept.read_bytes() == tmp.read_bytes()


def test_backup_holds_every_0_1_file(upgraded: Upgraded) -> None:
    assert upgraded.result.backup == upgraded.root / ".hive-0.1"
    assert tree(upgraded.root / ".hive-0.1") == tree(FIXTURES / "dataset")
    assert sorted(p.name for p in upgraded.root.iterdir()) == sorted(
        [".hive-0.1", *NEW_LOCKS, *TABLE_NAMES]
    )
    assert "delete that folder once you are satisfied" in upgraded.result.note


def test_result_is_json(upgraded: Upgraded) -> None:
    data = json.loads(json.dumps(upgraded.result.to_dict()))
    assert data["already"] is False
    assert data["backup"] == str(upgraded.root / ".hive-0.1")
    assert data["instances"] == list(INSTANCES)
    assert data["captures"] == upgraded.result.rows["captures"]
    assert data["unparsed"] == UNPARSED


def test_progress_tells_each_table(upgraded: Upgraded) -> None:
    staged = [text.split(":")[0] for text in upgraded.said if text.endswith("staged")]
    assert sorted(staged) == sorted(TABLE_NAMES)
    assert any(text.startswith("verified:") for text in upgraded.said)


def test_overview_is_what_the_0_1_files_say(tmp_path: Path) -> None:
    old = old_table(FIXTURES / "dataset", "captures")
    expected = {
        "captures": old.height,
        "failed": int((~old["ok"]).sum()),
        "first": old["ts"].min(),
        "last": old["ts"].max(),
        "instances": len(INSTANCES),
        "client_rows": int(old["n_clients"].sum()),
        "rejected_lines": int(old["n_rejects"].sum()),
    }
    root = copy("dataset", tmp_path)
    upgrade(root)
    ds = read(root)
    assert ds.overview() == expected
    assert ds.unparsed == UNPARSED
    assert (
        ds.clients.select(pl.len()).collect().item()
        == old_table(FIXTURES / "dataset", "clients").height
    )


def test_captures_0_1_never_parsed_are_parsed_by_the_next_write(tmp_path: Path) -> None:
    root = copy("dataset", tmp_path)
    result = upgrade(root)
    assert (result.captures, result.unparsed) == (
        old_table(FIXTURES / "dataset", "captures").height,
        UNPARSED,
    )
    assert mend(root) == UNPARSED
    ds = open_dataset(root)  # no DatasetWarning: filterwarnings = error
    assert ds.unparsed == 0
    assert ds.captures.select(pl.len()).collect().item() == result.captures + UNPARSED
    loop = ds.captures.filter(pl.col("source") == "import", pl.col("instance") == "redis-b:6379")
    assert loop.select(pl.len()).collect().item() == UNPARSED


def test_half_parsed_batch_is_parsed_again_not_counted_twice(tmp_path: Path) -> None:
    """0.1 parsed a batch again when one of its parsed files was missing (a writer killed
    midway): the upgrade leaves its other parsed files out, and the next write parses it."""
    whole = copy("dataset", tmp_path / "whole")
    half = copy("dataset", tmp_path / "half")
    (clients,) = half.glob("clients/instance=%C3%BC-cache/*/*.parquet")
    clients.unlink()
    upgrade(whole)
    result = upgrade(half)
    assert result.unparsed == UNPARSED + 1
    assert "ü-cache" not in new_table(half, "captures")["instance"]
    mend(whole)
    mend(half)
    for table in TABLE_NAMES:
        assert new_table(half, table).height == new_table(whole, table).height, table


# ------------------------------------------------------------------ which folders
def test_second_upgrade_says_already(upgraded: Upgraded) -> None:
    before = tree(upgraded.root)
    with collecting(upgraded.root):  # a collector may run on an upgraded dataset
        again = upgrade(upgraded.root)
    assert again.already
    assert again.backup is None
    assert again.rows == upgraded.result.rows
    assert again.note.endswith("already holds Delta Lake tables: nothing to upgrade.")
    assert tree(upgraded.root) == before


def test_backup_gets_a_new_name_when_one_is_there(tmp_path: Path) -> None:
    root = copy("dataset", tmp_path)
    (root / ".hive-0.1").mkdir()
    (root / ".hive-0.1" / "mine.txt").write_text("an earlier upgrade's, or the user's")
    result = upgrade(root)
    assert result.backup == root / ".hive-0.1-2"
    assert tree(root / ".hive-0.1-2") == tree(FIXTURES / "dataset")
    assert tree(root / ".hive-0.1") == {"mine.txt": b"an earlier upgrade's, or the user's"}


def test_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="is not a folder: point `upgrade` at a dataset"):
        upgrade(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("files", [[], ["notes.txt", "raw/readme.md"], ["captures/x.parquet"]])
def test_a_folder_that_is_no_dataset_is_an_error(tmp_path: Path, files: list[str]) -> None:
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("not a dataset")
    before = tree(tmp_path)
    with pytest.raises(DatasetError, match=r"is not a clientscope dataset: it has neither Delta"):
        upgrade(tmp_path)
    assert tree(tmp_path) == before  # not even a lock file made


# ------------------------------------------------------------------ failing safely
Mangle = Callable[[pl.LazyFrame], pl.LazyFrame]


def drop_a_client_row(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.filter(pl.col("line_no") != 1) if "line_no" in frame.collect_schema() else frame


def change_raw_bytes(frame: pl.LazyFrame) -> pl.LazyFrame:
    if "client_list" not in frame.collect_schema():
        return frame
    return frame.with_columns(pl.col("client_list").bin.encode("hex").cast(pl.Binary))


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (drop_a_client_row, r"staged clients table .*: instance '.*' has \d+ rows in the 0.1 files, \d+ staged"),
        (change_raw_bytes, r"staged raw table .*: instance '.*' has as many rows, but their contents differ"),
    ],
)  # fmt: skip
def test_a_failed_check_leaves_the_0_1_layout_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mangle: Mangle, message: str
) -> None:
    """The staging is written wrong on purpose; the check must see it, not trust the writer."""
    root = copy("dataset", tmp_path)

    def commit_mangled(root: Path, name: str, frame: pl.LazyFrame, **kw: Any) -> None:
        commit_table(root, name, mangle(frame), **kw)

    monkeypatch.setattr(upgrade_module, "commit_table", commit_mangled)
    with pytest.raises(DatasetError, match=message) as error:
        upgrade(root)
    assert "Nothing was changed: the 0.1 layout is as it was" in str(error.value)
    assert tree(root, skip=NEW_LOCKS) == tree(FIXTURES / "dataset")


def test_the_name_hive_keeps_for_null_stays_a_name(tmp_path: Path) -> None:
    """0.1 read `instance=__HIVE_DEFAULT_PARTITION__` back as that name; so does clientscope
    (Polars' own scan_delta reads it as null: the check reads the tables as clientscope does)."""
    root = copy("hive-null", tmp_path)
    result = upgrade(root)
    assert result.instances == ("__HIVE_DEFAULT_PARTITION__",)
    ds = read(root)
    assert ds.instances() == ["__HIVE_DEFAULT_PARTITION__"]
    for table in TABLE_NAMES:
        old = old_table(FIXTURES / "hive-null", table)
        assert_frame_equal(in_order(ds.scan(table).collect()), in_order(old))


def test_a_dataset_folder_with_a_space_in_its_path(tmp_path: Path) -> None:
    root = copy("dataset", tmp_path / "incident data")
    result = upgrade(root)
    assert result.rows["clients"] == old_table(FIXTURES / "dataset", "clients").height
    assert read(root).clients.select(pl.len()).collect().item() == result.rows["clients"]


def add_a_raw_column(root: Path) -> None:
    path = old_files(root, "raw")[0]
    pl.read_parquet(path).with_columns(pl.lit("x").alias("secret")).write_parquet(path)


def break_a_captures_file(root: Path) -> None:
    old_files(root, "captures")[0].write_bytes(b"not Parquet: a disk error")


def break_the_journal(root: Path) -> None:
    (journal,) = root.glob(".compact/*.json")
    journal.write_text('{"state": "committing", "partit')


def shorten_a_merged_file(root: Path) -> None:
    (merged,) = root.glob("clients/*/*/*-compact.parquet")
    pl.read_parquet(merged).head(5).write_parquet(merged)


@pytest.mark.parametrize(
    ("fixture", "damage", "message"),
    [
        ("dataset", add_a_raw_column, r"raw/.*\.parquet has columns clientscope does not know: \['secret'\]; the upgrade would lose them"),
        ("dataset", break_a_captures_file, r"captures/.*\.parquet is not a readable Parquet file .* Move it out of the dataset folder"),
        ("compacting", break_the_journal, r"cannot read the clientscope 0.1 compaction journal .*json .* a merged `\*-compact.parquet` file and the batches it merged may both be there"),
        ("compacting", shorten_a_merged_file, r"compact\.parquet, merged by a clientscope 0.1 compaction .* has 5 rows, its sources 22\. Run `clientscope compact`"),
    ],
)  # fmt: skip
def test_what_upgrade_cannot_keep_is_refused_with_the_mend(
    tmp_path: Path, fixture: str, damage: Callable[[Path], None], message: str
) -> None:
    root = copy(fixture, tmp_path)
    damage(root)
    before = tree(root)
    with pytest.raises(DatasetError, match=message):
        upgrade(root)
    assert tree(root, skip=NEW_LOCKS) == before


@pytest.mark.parametrize(
    ("lock", "message"),
    [(COLLECT_LOCK, "a collector is writing to"), (".append.lock", "a clientscope 0.1 import or collect is writing")],
)  # fmt: skip
def test_refused_while_a_collector_writes(tmp_path: Path, lock: str, message: str) -> None:
    root = copy("dataset", tmp_path)
    holder = collecting(root) if lock == COLLECT_LOCK else exclusive(root / lock)
    with holder, pytest.raises(DatasetError, match=message):
        upgrade(root)
    assert tree(root, skip=NEW_LOCKS) == tree(FIXTURES / "dataset")


# ------------------------------------------------------------------ resuming
class Killed(BaseException):
    """What a kill leaves: nothing after it runs."""


def killed_after(renames: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The upgrade dies before its renames+1-th rename of the swap."""
    left = [renames]
    move = upgrade_module._move

    def move_or_die(source: Path, target: Path) -> None:
        if left[0] == 0:
            raise Killed
        left[0] -= 1
        move(source, target)

    monkeypatch.setattr(upgrade_module, "_move", move_or_die)


@pytest.mark.parametrize("renames", [0, 3, 6, 9, 12])  # 6 old tables out, 6 new in, the lock file
def test_an_interrupted_swap_is_finished_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renames: int
) -> None:
    root = copy("dataset", tmp_path)
    killed_after(renames, monkeypatch)
    with pytest.raises(Killed):
        upgrade(root)
    assert (root / ".upgrade" / "verified.json").exists()
    monkeypatch.undo()
    said: list[str] = []
    result = upgrade(root, progress=said.append)
    assert not result.already
    assert said[0].startswith("finishing the upgrade verified in")
    assert result.backup == root / ".hive-0.1"
    assert tree(root / ".hive-0.1") == tree(FIXTURES / "dataset")
    assert not (root / ".upgrade").exists()
    for table in TABLE_NAMES:
        old = old_table(FIXTURES / "dataset", table)
        assert_frame_equal(in_order(new_table(root, table)), in_order(old))
        assert result.rows[table] == old.height
    assert tuple(read(root).instances()) == INSTANCES


def test_a_staging_left_before_it_was_checked_is_made_again(tmp_path: Path) -> None:
    root = copy("dataset", tmp_path)
    (root / ".upgrade" / "raw").mkdir(parents=True)
    (root / ".upgrade" / "raw" / "part-of-a-killed-run.parquet").write_bytes(b"half")
    result = upgrade(root)
    assert result.rows["raw"] == old_table(FIXTURES / "dataset", "raw").height
    assert not (root / ".upgrade").exists()


# ------------------------------------------------------------------ 0.1's own states
def test_an_interrupted_0_1_compaction_is_read_once(tmp_path: Path) -> None:
    """Killed mid-commit: the merged captures and clients files are in place beside their
    sources, the other tables' still temporary. Each row is read once, as 0.1 did."""
    root = copy("compacting", tmp_path)
    (journal,) = root.glob(".compact/*.json")
    merged = json.loads(journal.read_text())
    result = upgrade(root)
    assert result.rows == merged["rows"]  # the rows 0.1 counted in the sources
    assert result.unparsed == 0
    clients = new_table(root, "clients")
    assert clients.select("capture_id", "line_no").is_unique().all()
    assert result.backup is not None
    assert (result.backup / ".compact" / journal.name).exists()


def test_many_small_commits_keep_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Big datasets are staged in slices (memory follows a slice); slices split files."""
    monkeypatch.setattr(upgrade_module, "_COMMIT_ROWS", 7)
    root = copy("dataset", tmp_path)
    upgrade(root)
    for table in TABLE_NAMES:
        old = old_table(FIXTURES / "dataset", table)
        assert_frame_equal(in_order(new_table(root, table)), in_order(old))
    commits = len(list((root / "clients" / "_delta_log").glob("*.json")))
    assert commits > old_table(FIXTURES / "dataset", "clients").height // 7


def test_exported_names() -> None:
    assert upgrade_module.__all__ == ["UpgradeResult", "upgrade"]


def test_the_upgrade_command_upgrades_parses_what_01_left_and_says_where_the_old_files_are(
    tmp_path: Path,
) -> None:
    import json
    import subprocess
    import sys

    root = copy("dataset", tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "clientscope", "upgrade", str(root), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert said["unparsed"] == said["parsed_now"] == UNPARSED
    assert f"kept in {root / '.hive-0.1'}: delete that folder" in said["note"]
    ds = read(root)
    assert ds.unparsed == 0 and sorted(ds.instances()) == sorted(INSTANCES)
    again = subprocess.run(
        [sys.executable, "-m", "clientscope", "upgrade", str(root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0 and "already holds Delta Lake tables" in again.stdout
