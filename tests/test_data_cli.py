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


def _table_pointing_outside(tmp_path: Path) -> tuple[Path, Path]:
    """A dataset folder whose rows leave the images root: `../`, an absolute path, a symlink out."""
    root, outside = tmp_path / "food", tmp_path / "elsewhere" / "photo.jpeg"
    (root / "images").mkdir(parents=True)
    outside.parent.mkdir()
    outside.write_bytes((N5K / "dish_1550704750/camera_A_frame_001.jpeg").read_bytes())
    (root / "images/inside.jpeg").write_bytes(outside.read_bytes() + b"\0")  # other bytes, still a JPEG
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT\n")
    (root / "images/link.jpg").symlink_to(secret)
    (root / "data.csv").write_text(
        "index,belok,fats,uglevod,kkal,name,path\n"
        "0,10,5,20,200,борщ,images/inside.jpeg\n"
        "1,10,5,20,200,борщ,../../../etc/passwd\n"
        f"2,10,5,20,200,щи,{secret}\n"
        "3,10,5,20,200,щи,images/link.jpg\n"
        f"4,10,5,20,200,каша,{outside}\n", encoding="utf-8")
    return root, outside


def test_check_refuses_paths_outside_the_images_root_unopened(runner, tmp_path, monkeypatch):
    import io

    root, outside = _table_pointing_outside(tmp_path)
    opened, real_open = [], io.open
    monkeypatch.setattr(io, "open", lambda file, *a, **k: opened.append(str(file)) or real_open(file, *a, **k))
    result = runner.invoke(app, ["data", "check", str(root), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kept"] == 1 and report["reasons"] == {"outside_root": 4}
    assert all("outside the images root" in row["issues"][0]["message"] for row in report["excluded_rows"])
    assert not [path for path in opened if "passwd" in path or "elsewhere" in path or "link.jpg" in path]
    assert "TOP-SECRET" not in result.output and "root:x" not in result.output
    result = runner.invoke(app, ["data", "stats", str(root), "--out", str(tmp_path / "stats")])
    assert result.exit_code == 0 and "kept: 1, excluded: 4" in result.stdout


def test_allow_outside_root_opts_in(runner, tmp_path):
    root, outside = _table_pointing_outside(tmp_path)
    result = runner.invoke(app, ["data", "check", str(root), "--allow-outside-root", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    kept_rows = {1, 2, 3, 4, 5} - {row["row"] for row in report["excluded_rows"]}
    assert 5 in kept_rows and "outside_root" not in report["reasons"]  # the real photo elsewhere is used
    assert "TOP-SECRET" not in result.output  # the text file is refused as no image, without echoing it
    result = runner.invoke(app, ["data", "stats", str(root), "--allow-outside-root", "--out", str(tmp_path / "s")])
    # excluded: the missing ../etc/passwd (relative to the root) and link.jpg, the same file as secret.txt
    assert result.exit_code == 0 and "kept: 3, excluded: 2" in result.stdout


def test_check_warns_about_duplicates_with_different_labels(runner, tmp_path):
    photo = (N5K / "dish_1550704750/camera_A_frame_001.jpeg").read_bytes()
    for name in ("a.jpeg", "b.jpeg", "c.jpeg"):
        (tmp_path / name).write_bytes(photo)
    (tmp_path / "data.csv").write_text(
        "index,belok,fats,uglevod,kkal,name,path\n0,10,5,20,200,борщ,a.jpeg\n1,10,5,20,200,щи,b.jpeg\n"
        "2,10,5,20,200,борщ,c.jpeg\n", encoding="utf-8")
    result = runner.invoke(app, ["data", "check", str(tmp_path)])
    assert result.exit_code == 0, result.output
    warning = next(line for line in result.stdout.splitlines() if line.startswith("WARNING"))
    assert "different" in warning
    assert "row 2 (line 3) b.jpeg: duplicate image" in result.stdout and "'щи'" in result.stdout
    assert "row 3 (line 4) c.jpeg: duplicate image" in result.stdout
    report = json.loads(runner.invoke(app, ["data", "check", str(tmp_path), "--json"]).stdout)
    assert [(c["row"], c["label"], c["kept_label"]) for c in report["duplicate_label_conflicts"]] == [
        (2, "щи", "борщ")]
