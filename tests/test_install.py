"""An installed rudolph-ft runs the demo from any folder: the packaged demo config, and demo data drawn on first use.

The wheel itself is built, installed into a fresh virtualenv and trained for an epoch by CI (`.ci/run`); these tests
check the same resolution quickly, in-process: `rudolph-ft train` with no config from an empty folder finds the
packaged config and points `data.path` at the demo set in the user's cache.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rudolph_ft.data.demo import DEMO_DATA, demo_data_dir, ensure_demo_data
from rudolph_ft.train.config import DEMO_CONFIG, load_train_config

ROOT = Path(__file__).parents[1]
N_SMALL = 6  # photos drawn by these tests (the real set: 300); photo i depends only on (seed, i)


@pytest.fixture
def empty_folder(tmp_path, monkeypatch) -> Path:
    """An empty working directory outside the checkout, with a cache of its own."""
    monkeypatch.setenv("RUDOLPH_FT_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_the_checkout_config_is_the_packaged_one():
    """One demo config: configs/demo.yaml links to the file shipped in the package, whose first line runs it."""
    assert (ROOT / "configs" / "demo.yaml").resolve() == DEMO_CONFIG.resolve()
    assert DEMO_CONFIG.read_text(encoding="utf-8").splitlines()[0] == "# rudolph-ft train"
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["rudolph_ft"]
    shipped = DEMO_CONFIG.relative_to(ROOT / "rudolph_ft").as_posix()
    assert any(fnmatch.fnmatch(shipped, pattern) for pattern in patterns), f"{shipped} is not package data"


def test_in_the_checkout_the_demo_trains_on_data_demo(monkeypatch):
    monkeypatch.chdir(ROOT)
    config = load_train_config(DEMO_CONFIG)
    assert config.data.path == DEMO_DATA and config.output_dir == "runs/demo"


def test_demo_data_is_drawn_once_like_the_checked_in_set(tmp_path):
    said = []
    folder = ensure_demo_data(tmp_path / "demo", n=N_SMALL, echo=said.append)
    assert len(said) == 1 and str(folder) in said[0]
    checked_in = ROOT / DEMO_DATA
    lines = (folder / "data.csv").read_text(encoding="utf-8").splitlines()
    assert lines == (checked_in / "data.csv").read_text(encoding="utf-8").splitlines()[:N_SMALL + 1]
    for row in lines[1:]:
        image = row.rsplit(",", 1)[1]
        assert (folder / image).read_bytes() == (checked_in / image).read_bytes(), image
    assert f"--out {folder.as_posix()} --n {N_SMALL} --seed 0 --size 128" in (folder / "README.md").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no staging folder left behind
    assert ensure_demo_data(folder, n=N_SMALL, echo=said.append) == folder and len(said) == 1  # not drawn again


def test_a_foreign_folder_is_not_taken_for_the_demo_set(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no demo set"):
        ensure_demo_data(tmp_path / "demo", n=1, echo=lambda _: None)
    assert (tmp_path / "demo" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("args", [[], ["train.epochs=1"]])
def test_train_without_a_config_in_an_empty_folder_uses_the_packaged_demo(empty_folder, monkeypatch, args):
    """`rudolph-ft train [overrides]` resolves the packaged config and the cached demo set (training stubbed)."""
    import rudolph_ft.train.loop as loop
    from rudolph_ft.cli import app

    ensure_demo_data(n=N_SMALL, echo=lambda _: None)  # the small set stands in for the 300-photo one
    loaded = []
    monkeypatch.setattr(loop, "train", lambda config, overrides, **_: loaded.append(
        (config, load_train_config(config, overrides))) or {})
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    [(config_path, config)] = loaded
    assert Path(config_path) == DEMO_CONFIG
    assert Path(config.data.path) == demo_data_dir() == empty_folder.parent / "cache" / DEMO_DATA
    assert config.output_dir == "runs/demo" and config.train.epochs == (1 if args else 40)


def test_a_missing_demo_set_is_drawn_into_the_cache(empty_folder, monkeypatch):
    import rudolph_ft.data.demo as demo

    monkeypatch.setattr(demo, "make_demo", _small(demo.make_demo))
    said = []
    config = load_train_config(DEMO_CONFIG, echo=said.append)
    assert Path(config.data.path) == demo_data_dir() and (demo_data_dir() / "data.csv").is_file()
    assert said and str(demo_data_dir()) in said[0]
    assert not Path("data").exists()  # nothing drawn into the working directory


def test_other_missing_paths_are_left_for_the_data_checks(empty_folder):
    config = load_train_config(DEMO_CONFIG, ["data.path=my_food/data.csv"], echo=pytest.fail)
    assert config.data.path == "my_food/data.csv" and not demo_data_dir().exists()


def _small(make_demo):
    return lambda out, n=300, **kwargs: make_demo(out, n=N_SMALL, **kwargs)
