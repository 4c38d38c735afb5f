"""The inference commands (`caption`, `predict`, `classify`, `generate`, `serve`) on a saved tiny bundle."""

import importlib.util
import json
import shutil

import pytest
from conftest import ASSETS
from PIL import Image
from typer.testing import CliRunner

from rudolph_ft.cli import app

_spec = importlib.util.spec_from_file_location("pipeline_bundle", ASSETS / "pipelines" / "bundle.py")
bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle)
one_thread = bundle.one_thread  # autouse: tiny models, one thread

PHOTOS = [str(p) for p in sorted((ASSETS / "images").glob("*.jpg"))[:2]]
runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A training-run-like folder whose final model writes the scripted borscht caption."""
    run = tmp_path_factory.mktemp("run")
    bundle.save_tiny_bundle(run / "final", seed=1, scripted=bundle.SCRIPT)
    return run


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_predict_json_reports_bad_images_and_keeps_going(model_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    result = invoke("predict", PHOTOS[0], tmp_path / "missing.jpg", broken, PHOTOS[1], "--model", model_dir,
                    "-n", "4", "--json")
    assert result.exit_code == 1, result.output
    assert "missing.jpg" in result.stderr and "broken.jpg" in result.stderr
    data = json.loads(result.stdout)
    answers = [item for item in data if "error" not in item]
    assert [a["image"] for a in answers] == PHOTOS
    assert all((a["dish"], a["kcal"], a["protein"]) == ("борщ", 70.0, 3.5) for a in answers)
    assert answers[0]["evidence"][0]["text"] == bundle.SCRIPT
    assert {item["image"] for item in data if "error" in item} == {str(tmp_path / "missing.jpg"), str(broken)}


def test_predict_and_caption_print_readable_lines(model_dir):
    result = invoke("predict", PHOTOS[0], "--model", model_dir, "-n", "2")
    assert result.exit_code == 0, result.output
    assert f"{PHOTOS[0]}: борщ: 70 kcal, protein 3.5 g, fat 4 g, carbs 6 g" in result.stdout
    result = invoke("caption", *PHOTOS, "--model", model_dir, "-n", "3", "--no-rerank")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [PHOTOS[0], f"  {bundle.SCRIPT}", PHOTOS[1], f"  {bundle.SCRIPT}"]
    result = invoke("caption", PHOTOS[0], "--model", model_dir, "-n", "2", "--json", "--style", "rc10")
    only = json.loads(result.stdout)[0]["captions"]
    assert only == [{"text": bundle.SCRIPT, "score": 0.0}]  # rc10's normalised score of a single caption


def test_classify_prints_the_best_class_first(model_dir):
    result = invoke("classify", PHOTOS[0], "--classes", "плов, борщ,шаурма", "--model", model_dir)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{PHOTOS[0]}: борщ" and lines[1].endswith("борщ")
    data = json.loads(invoke("classify", PHOTOS[0], "--classes", "плов,борщ", "--model", model_dir, "--json").stdout)
    assert data[0]["label"] == "борщ" and len(data[0]["probabilities"]) == 2
    assert invoke("classify", PHOTOS[0], "--classes", " , ", "--model", model_dir).exit_code == 2


def test_generate_writes_a_grid(model_dir, tmp_path):
    out = tmp_path / "grid.png"
    result = invoke("generate", "борщ", "--out", out, "-n", "3", "--model", model_dir / "final", "--columns", "3",
                    "--top-k", "32")
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (3 * 66 + 2, 68)


def test_unloadable_model_is_a_clear_error(tmp_path):
    result = invoke("caption", PHOTOS[0], "--model", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "cannot load model" in result.stderr and "nowhere" in result.stderr


def test_tokenizer_and_vqgan_overrides(model_dir, tmp_path):
    copy = shutil.copytree(model_dir / "final", tmp_path / "copy")
    tokenizer = shutil.move(copy / "bpe.model", tmp_path / "bpe.model")
    (copy / "components.json").write_text('{"tokenizer": "rudalle"}')
    result = invoke("caption", PHOTOS[0], "--model", copy, "--tokenizer", tokenizer, "--vqgan", "tiny", "-n", "1",
                    "--offline")
    assert result.exit_code == 0, result.output
    assert bundle.SCRIPT in result.stdout


def test_serve_binds_to_localhost_by_default():
    result = invoke("serve", "--help")
    assert result.exit_code == 0 and "127.0.0.1" in result.stdout
