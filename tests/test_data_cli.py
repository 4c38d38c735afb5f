"""`rudolph-ft data check | demo | stats` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rudolph_ft.cli import app

N5K = Path(__file__).parent / "assets" / "data" / "nutrition5k"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_check_prints_kept_and_excluded_rows(runner):
    result = runner.invoke(app, ["data", "check", str(N5K)])
    assert result.exit_code == 0, result.output
    assert "rows: 7, kept: 6, excluded: 1" in result.stdout
    assert "row 7 (line 8) dish_1559845399/rgb.png: caption too long" in result.stdout
    assert "depth_raw.png" in result.stdout  # the 16-bit note


def test_check_strict_and_json(runner):
    result = runner.invoke(app, ["data", "check", str(N5K / "data.csv"), "--strict", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["kept"] == 6 and report["reasons"] == {"caption_too_long": 1}


def test_check_with_a_generic_schema_and_images_root(runner, tmp_path):
    (tmp_path / "labels.csv").write_text(
        "file,dish,kcal\ndish_1550704750/camera_A_frame_001.jpeg,курица,137\nmissing.jpg,суп,-5\n", encoding="utf-8")
    args = ["data", "check", str(tmp_path), "--images-root", str(N5K), "--image-column", "file",
            "--template", "блюдо: {dish}; ккал: {kcal};", "--numeric", "kcal", "--required", "dish", "--strict"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "kept: 1, excluded: 1" in result.stdout and "missing file" in result.stdout
    assert "negative number" in result.stdout


def test_check_unreadable_table_exits_2_with_the_reason(runner, tmp_path):
    result = runner.invoke(app, ["data", "check", str(tmp_path / "none.csv")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    (tmp_path / "data.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    result = runner.invoke(app, ["data", "check", str(tmp_path)])
    assert result.exit_code == 2 and "lacks column" in result.stderr


def test_demo_then_check_then_stats(runner, tmp_path):
    result = runner.invoke(app, ["data", "demo", "--out", str(tmp_path / "demo"), "--n", "20", "--seed", "1",
                                 "--size", "32"])
    assert result.exit_code == 0, result.output
    assert "wrote 20 photos" in result.stdout
    assert runner.invoke(app, ["data", "check", str(tmp_path / "demo"), "--strict"]).exit_code == 0
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "demo"), "--out", str(tmp_path / "stats")])
    assert result.exit_code == 0, result.output
    assert "kept: 20" in result.stdout and "борщ" in result.stdout
    assert (tmp_path / "stats" / "wordcloud.png").is_file() and (tmp_path / "stats" / "stats.json").is_file()
