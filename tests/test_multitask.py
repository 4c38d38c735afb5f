"""Multitask training (issue 16, part 3): task tables and their check, rows built by their Task with token dropout,
per-task loss weights in the objective (checked against cross-entropies computed from the logits), the demo rows."""

import csv
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ASSETS
from numerics import assert_scalar_close, longest_sum
from typer.testing import CliRunner

from rudolph_ft.cli import app
from rudolph_ft.config import RuDolphConfig
from rudolph_ft.data.demo import DISHES
from rudolph_ft.data.demo_tasks import (
    TASKS_VAL_FILE,
    demo_task_rows,
    nutrition_rows,
    score_vqa_answers,
    unit_grams,
    write_demo_tasks,
)
from rudolph_ft.data.tables import DataError
from rudolph_ft.data.tasks_data import read_task_table
from rudolph_ft.model import RuDolph
from rudolph_ft.tasks import TaskLayout, get_task, task_token_ids
from rudolph_ft.tokenizer import Tokenizer
from rudolph_ft.train.data import TaskExamples, assemble_task_batch, balanced_order
from rudolph_ft.train.loop import Trainer

ROOT = Path(__file__).parents[1]
TOKENIZER = Tokenizer.from_file(ASSETS / "tokenizer" / "yttm-captions" / "bpe.model")


def fbc2_layout() -> TaskLayout:
    """A tiny model with the `2.7B_fbc2` task tokens (its name picks the table)."""
    config = RuDolphConfig.from_preset("2.7B_fbc2").replace(
        num_layers=1, hidden_size=32, num_attention_heads=4, l_text_seq_length=24, r_text_seq_length=16,
        image_tokens_per_dim=8, kernel_size=3, last_kernel_size=5, text_special_tokens=32, image_special_tokens=8,
        image_vocab_size=512, vocab_size=TOKENIZER.vocab_size + 24)
    return TaskLayout(config, TOKENIZER)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """12 rows of the committed demo set, and a multitask table about them (VQA) and about nutrition (text QA)."""
    out = tmp_path_factory.mktemp("data")
    lines = (ROOT / "data" / "demo" / "data.csv").read_text(encoding="utf-8").splitlines()
    (out / "data.csv").write_text("\n".join(lines[:13]) + "\n", encoding="utf-8")
    (out / "images").mkdir()
    rows = demo_task_rows(out / "data.csv")
    for row in rows:
        if row["image"]:
            shutil.copy(ROOT / "data" / "demo" / row["image"], out / row["image"])
    vqa = [row for row in rows if row["task"] == "vqa"]
    textqa = [row for row in rows if row["task"] == "textqa"]
    write_jsonl(out / "tasks.jsonl", vqa + textqa[::25])
    # validation rows (tasks.val_path): 6 VQA, and 15 text QA, more than a batch of 12
    write_jsonl(out / TASKS_VAL_FILE, vqa[-6:] + textqa[3::27])
    return out


# The table and its check ------------------------------------------------------------------------------------------
def test_a_task_table_reads_rows_with_absolute_images(small_data):
    table = read_task_table(small_data / "tasks.jsonl")
    assert table.counts() == {"textqa": 16, "vqa": 24}
    first = table.rows[0]
    assert (first.task, first.left_text, first.right_text) == ("vqa", "Ответь на вопрос по картинке. какое это "
                                                               "блюдо?", "борщ")
    assert first.image == (small_data / "images" / "0000_borscht.jpg").absolute()
    assert all(row.image is None for row in table.rows if row.task == "textqa")


def test_problems_name_the_file_row_and_field(tmp_path):
    rows = [
        {"task": "vqa", "left_text": "что это?", "image": "a.jpg", "right_text": "борщ"},  # fine
        {"task": "vqqa", "left_text": "что это?", "image": "a.jpg", "right_text": "борщ"},
        {"task": "vqa", "left_text": "что это?", "image": "", "right_text": "борщ"},
        {"task": "textqa", "left_text": "сколько?", "image": "a.jpg", "right_text": "3"},
        {"task": "textqa", "left_text": "сколько?", "image": "", "right_text": ""},
        {"task": "captioning", "left_text": "", "image": "missing.jpg", "right_text": "суп"},
        {"task": "captioning", "left_text": "", "image": "../outside.jpg", "right_text": "суп"},
    ]
    (tmp_path / "in").mkdir()
    (tmp_path / "outside.jpg").write_bytes(b"x")
    (tmp_path / "in" / "a.jpg").write_bytes(b"x")
    path = write_jsonl(tmp_path / "in" / "tasks.jsonl", rows)
    table = read_task_table(path, strict=False)
    assert len(table.rows) == 1
    expected = [("row 2", "'task'", "unknown task 'vqqa'"), ("row 3", "'image'", "needs an image"),
                ("row 4", "'image'", "takes no image"), ("row 5", "'right_text'", "needs an answer"),
                ("row 6", "'image'", "no file"), ("row 7", "'image'", "outside the images root")]
    assert len(table.problems) == len(expected)
    for problem, words in zip(table.problems, expected, strict=True):
        assert str(path) in problem and all(word in problem for word in words), problem
    with pytest.raises(DataError, match=r"row 2 \(line 2\), field 'task'"):
        read_task_table(path)
    assert len(read_task_table(path, strict=False, allow_outside_root=True).rows) == 2
    # what the user types: `rudolph-ft data check` recognises the table by its task column
    result = CliRunner().invoke(app, ["data", "check", str(path), "--strict"])
    assert result.exit_code == 1, result.output
    assert "1 usable row(s) (vqa 1), 6 problem(s)" in result.output and "row 3 (line 3), field 'image'" in \
        result.output
    write_jsonl(path, rows[:1])
    result = CliRunner().invoke(app, ["data", "check", str(path), "--strict"])
    assert result.exit_code == 0 and "0 problem(s)" in result.output


def test_a_table_without_the_columns_says_which(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"task": "vqa", "left_text": "a"}])
    with pytest.raises(DataError, match="no column.*right_text"):
        read_task_table(path)


# Rows built by their Task ---------------------------------------------------------------------------------------
def test_a_batch_holds_each_rows_task_sequence():
    layout = fbc2_layout()
    codes = torch.randint(0, 512, (3, 64))
    codes[1] = 0  # a text task: image codes 0
    examples = TaskExamples.of_rows(["vqa", "textqa", "captioning"], ["какое это блюдо?", "сколько белков?", ""],
                                    ["борщ", "7 г", "суп"], codes)
    batch = assemble_task_batch(examples, [2, 0, 1], layout, rng=random.Random(5), token_dropout=0.25)
    rng = random.Random(5)  # the same draws, row by row in batch order: left then right
    for position, i in enumerate([2, 0, 1]):
        task = get_task(examples.tasks[i])
        left, right = task.training_rows(layout, examples.left_texts[i], examples.right_texts[i], rng=rng)
        assert torch.equal(batch[position], torch.cat([left, codes[i], right]))
    # without dropout: [bos, <LT_task>] + bpe(text) + [eos] by hand, the task tokens of the baseline's table
    batch = assemble_task_batch(examples, [0], layout, rng=random.Random(0), token_dropout=0.0)[0]
    ids = task_token_ids(layout.config)
    left = [TOKENIZER.bos_id, ids["<LT_VQA>"], *TOKENIZER.encode("какое это блюдо?"), TOKENIZER.eos_id]
    right = [TOKENIZER.bos_id, ids["<RT_VQA>"], *TOKENIZER.encode("борщ"), TOKENIZER.eos_id]
    assert batch[:len(left)].tolist() == left and not batch[len(left):24].any()
    assert torch.equal(batch[24:88], codes[0])
    assert batch[88:88 + len(right)].tolist() == right and not batch[88 + len(right):].any()


def test_token_dropout_replaces_a_quarter_of_the_task_tokens():
    layout = fbc2_layout()
    ids = task_token_ids(layout.config)
    n = 2000
    examples = TaskExamples.of_rows(["textqa"] * n, ["вопрос"] * n, ["ответ"] * n,
                                    torch.zeros(n, 64, dtype=torch.long))
    batch = assemble_task_batch(examples, list(range(n)), layout, rng=random.Random(1), token_dropout=0.25)
    left, right = batch[:, 1], batch[:, 89]
    assert set(left.tolist()) == {ids["<LT_TQA>"], ids["<LT_UNK>"]}
    assert set(right.tolist()) == {ids["<RT_TQA>"], ids["<RT_UNK>"]}
    for side, unk in ((left, "<LT_UNK>"), (right, "<RT_UNK>")):
        rate = float((side == ids[unk]).double().mean())
        assert abs(rate - 0.25) < 4 * (0.25 * 0.75 / n) ** 0.5, rate  # within 4 standard deviations
    again = assemble_task_batch(examples, list(range(n)), layout, rng=random.Random(1), token_dropout=0.25)
    assert torch.equal(batch, again)  # the seed decides


def test_balanced_order_draws_every_task_equally():
    tasks = ["captioning"] * 900 + ["vqa"] * 90 + ["textqa"] * 10
    batches = balanced_order(tasks, 100, seed=3, epoch=0)
    drawn = [tasks[i] for batch in batches for i in batch]
    assert len(drawn) == 1000
    for name in ("captioning", "vqa", "textqa"):
        assert abs(drawn.count(name) / 1000 - 1 / 3) < 0.06, name
    assert batches == balanced_order(tasks, 100, seed=3, epoch=0) != balanced_order(tasks, 100, seed=3, epoch=1)


# The demo rows ------------------------------------------------------------------------------------------------------
def test_nutrition_rows_answer_from_the_dish_table():
    borscht = DISHES[0]
    assert unit_grams(borscht) == 300 and unit_grams(DISHES[5]) == 12  # «dumpling of 12 g»
    rows = {row["left_text"]: row["right_text"] for row in nutrition_rows(DISHES)}
    instruction = "Определи правильный ответ по тексту."  # the text QA prompt's, as `answer_text` builds it
    assert rows[f"{instruction} сколько белков в 100 г блюда «борщ»?"] == "2.5 г"  # 7.5 g per 300 g
    assert rows[f"{instruction} сколько ккал в 300 г блюда «борщ»?"] == "186 ккал"
    assert all(row["image"] == "" for row in nutrition_rows(DISHES))


def test_vqa_scores_by_hand(small_data):
    rows = [row for row in demo_task_rows(small_data / "data.csv") if row["task"] == "vqa"][:4]
    assert [row["right_text"] for row in rows] == ["борщ", "164", "шаурма", "507"]
    scores = score_vqa_answers(rows, ["Борщ ", "170 ккал", "борщ", "нет"])
    assert scores["dish_accuracy"] == 0.5 and scores["dish_questions"] == 2
    assert scores["kcal_mae"] == pytest.approx((6 + 507) / 2) and scores["kcal_unreadable"] == 1
    assert scores["kcal_mean_baseline_mae"] == pytest.approx(171.5)  # mean 335.5


def test_demo_questions_about_validation_photos_are_held_out(small_data, tmp_path):
    """tasks_val.jsonl asks about exactly the photos data.path's split keeps for validation."""
    from rudolph_ft.train.config import load_train_config
    from rudolph_ft.train.prepare import run_dataset

    shutil.copytree(small_data, tmp_path / "d")
    train_file, val_file = write_demo_tasks(tmp_path / "d" / "data.csv", val_fraction=0.3, split_seed=4)
    config = load_train_config(None, [f"data.path={tmp_path / 'd'}", "data.val_fraction=0.3", "data.split_seed=4"])
    _, val = run_dataset(config.data, 64).split()

    def photos(path):
        return {row["image"] for row in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if row["image"]}

    assert photos(val_file) == {record.image for record in val.records} != set()
    assert not photos(train_file) & photos(val_file)


# Training --------------------------------------------------------------------------------------------------------
CONFIG = ROOT / "configs" / "demo-multitask.yaml"


def tiny_overrides(data: Path, run: Path, dropout: float = 0.0, val: Path | None = None) -> list[str]:
    """configs/demo-multitask.yaml at a tiny size on `data` (its tasks.jsonl; validation rows `val`, default
    none), batch 12, no evaluation."""
    return [f"output_dir={run}", f"data.path={data}", f"tasks.path={data / 'tasks.jsonl'}",
            f"tasks.val_path={val if val is not None else 'null'}",
            "model.overrides={num_layers: 1, hidden_size: 32, num_attention_heads: 2, l_text_seq_length: 32, "
            f"attention_dropout_prob: {dropout}, output_dropout_prob: {dropout}}}",
            "tokenizer.train_vocab_size=200", "vqgan.views=1", "train.batch_size=12", "eval.final=false",
            "eval.every=0", "logging.progress=false", "checkpoint.every=0"]


def test_a_learned_tokenizer_learns_the_task_texts_too(small_data, tmp_path):
    """tokenizer.name: null learns the BPE from the training captions and the table's left and right texts: a
    question's characters («ё», «?», ««») get ids, where a tokenizer of the captions alone has only UNK for them."""
    from rudolph_ft.tokenizer import normalize_text, train_tokenizer
    from rudolph_ft.train.config import load_train_config
    from rudolph_ft.train.prepare import check_learned_tokenizer, learning_task_texts, prepare_run

    run = tmp_path / "run"
    config = load_train_config(CONFIG, tiny_overrides(small_data, run))
    messages = []
    prepared = prepare_run(config, run, None, echo=messages.append)
    tokenizer = prepared.components.tokenizer
    table = read_task_table(small_data / "tasks.jsonl")
    questions = [normalize_text(row.left_text) for row in table.rows]
    assert any("ё" in q for q in questions) and all(q.endswith("?") for q in questions)
    captions_only = train_tokenizer(prepared.train.captions, 200)
    assert any(captions_only.unk_id in captions_only.encode(q) for q in questions)  # what the old code learned
    for text in questions + [normalize_text(row.right_text) for row in table.rows]:
        assert tokenizer.unk_id not in tokenizer.encode(text), text
    assert tokenizer.unk_id not in tokenizer.encode(normalize_text("Сколько в нём ккал? «борщ»"))
    assert any("200 BPE ids from 11 training captions and 80 task texts of" in m for m in messages), messages

    settings = json.loads((run / "bpe.settings.json").read_text(encoding="utf-8"))
    assert settings["task_texts"] == 80 and settings["tasks_path"] == str((small_data / "tasks.jsonl").absolute())
    task_texts = learning_task_texts(config)
    check_learned_tokenizer(config, run, prepared.train.captions, task_texts=task_texts)  # the same: no error
    with pytest.raises(ValueError, match="learned from 80 task texts of .* this run has 79 task texts .* the "
                                         "task texts differ"):
        check_learned_tokenizer(config, run, prepared.train.captions, task_texts=task_texts[1:])
    single = config.model_copy(update={"tasks": config.tasks.model_copy(update={"path": None})})
    with pytest.raises(ValueError, match="learned from 80 task texts .* this run has no task texts"):
        check_learned_tokenizer(single, run, prepared.train.captions, task_texts=learning_task_texts(single))


@pytest.mark.slow  # three small runs: ~20 s alone on 2 cores, more on a busy machine
def test_a_resumed_multitask_run_continues_bitwise(small_data, tmp_path):
    """Token dropout draws from the run's saved text stream, the order from (seed, epoch): a resume continues."""
    from rudolph_ft.train.config import load_train_config

    def config(run, *extra):
        return load_train_config(CONFIG, [*tiny_overrides(small_data, run, dropout=0.1), "train.max_steps=4",
                                          "vqgan.views=4", *extra])  # the VQA rows' views drawn per step too

    def stop_at_two(trainer, metrics):
        if metrics["step"] == 2:
            trainer.request_stop("test interruption")

    Trainer(config(tmp_path / "full"), echo=lambda m: None).run()
    Trainer(config(tmp_path / "cut"), on_step=stop_at_two, echo=lambda m: None).run()
    Trainer(config(tmp_path / "cut"), resume=True, echo=lambda m: None).run()

    def rows(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    full, resumed = rows(tmp_path / "full"), rows(tmp_path / "cut")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    keys = [k for k in full[0] if k.startswith(("loss", "task_loss/"))]
    assert [[r.get(k) for k in keys] for r in resumed] == [[r.get(k) for k in keys] for r in full]


@pytest.mark.parametrize("augment", ["dihedral", "shift", "gumbel"])
def test_vqa_rows_see_the_photos_views_as_captioning_rows_do(small_data, tmp_path, augment):
    """tasks.augment (default [vqa]): a VQA row's photo takes the run's image views; with dihedral views they are the
    very codes data.path's captioning example of the same photo has; text rows (and validation rows) stay view 0;
    the view a step takes is drawn from (seed, step)."""
    from rudolph_ft.train.config import load_train_config
    from rudolph_ft.train.data import assemble_task_batch

    views = 8 if augment == "dihedral" else 4
    extra = [f"vqgan.views={views}", f"vqgan.augment={augment}", "train.max_steps=1",
             f"tasks.val_path={small_data / TASKS_VAL_FILE}"]
    trainer = Trainer(load_train_config(CONFIG, [*tiny_overrides(small_data, tmp_path / "run"), *extra]),
                      echo=lambda m: None)
    trainer.run()
    data, table = trainer.task_data, read_task_table(small_data / "tasks.jsonl")
    assert data.views == views
    vqa = [i for i, row in enumerate(table.rows) if row.task == "vqa"]
    text = [i for i, row in enumerate(table.rows) if row.task == "textqa"]
    assert data.augmented[vqa].all() and not data.augmented[text].any()
    grids = data.codes[data.image_of]  # (N, views, 64)
    assert not grids[text].any()
    for i in vqa:  # every view its own codes (the photo turned, moved or sampled)
        assert len({tuple(g.tolist()) for g in grids[i]}) > views // 2, (augment, i)
    caption_codes = {Path(m["image_path"]).name: trainer.prepared.train.codes[k]
                     for k, m in enumerate(trainer.prepared.train.meta)}
    compared = 0
    for i in vqa:
        mine = caption_codes.get(table.rows[i].image.name)
        if mine is not None:
            compared += 1
            assert torch.equal(grids[i, 0], mine[0])  # view 0: the photo's argmax codes, however augmented
            if augment in ("dihedral", "gumbel"):  # shifts are drawn per list, not per photo
                assert torch.equal(grids[i], mine), (augment, table.rows[i].image.name)
    assert compared >= 10
    val = trainer.task_val_data
    assert val.views == 1 and not val.augmented.any()
    layout = trainer.task_layout

    def batch(step):
        return assemble_task_batch(data, vqa, layout, rng=random.Random(0), token_dropout=0.0, seed=42, step=step)

    image = slice(layout.config.l_text_seq_length, layout.config.l_text_seq_length + 64)
    drawn = [batch(step)[:, image] for step in range(6)]
    assert torch.equal(drawn[3], batch(3)[:, image])  # (seed, step) decides
    assert len({tuple(d.flatten().tolist()) for d in drawn}) == 6
    assert all(any(torch.equal(d[r], g) for g in grids[i]) for d in drawn for r, i in enumerate(vqa))
    unseeded = assemble_task_batch(data, vqa, layout, rng=random.Random(0), token_dropout=0.0)[:, image]
    assert torch.equal(unseeded, grids[vqa, 0])


def test_a_run_says_how_many_task_texts_its_segments_cut(small_data, tmp_path):
    """Rows whose left text (bos + bpe + eos) is longer than l_text_seq_length are cut as the baseline cuts them; the
    run says how many and the longest before training, counted here with the run's own tokenizer."""
    from rudolph_ft.tokenizer import normalize_text
    from rudolph_ft.train.config import load_train_config

    run = tmp_path / "run"
    messages = []
    Trainer(load_train_config(CONFIG, [*tiny_overrides(small_data, run), "train.max_steps=1",
                                       "model.overrides.l_text_seq_length=12"]), echo=messages.append).run()
    tokenizer = Tokenizer.from_file(run / "bpe.model")
    table = read_task_table(small_data / "tasks.jsonl")
    lengths = [len(tokenizer.encode(normalize_text(row.left_text))) + 2 for row in table.rows]  # the demo: no tokens
    cut = sum(n > 12 for n in lengths)
    assert 0 < cut < len(lengths)
    notes = [m for m in messages if m.startswith("note:") and "left text" in m]
    assert notes == [f"note: {cut} of {len(lengths)} rows of {small_data / 'tasks.jsonl'} have a left text longer than "
                     f"l_text_seq_length (12 tokens, the longest {max(lengths)}): cut to it; raise "
                     "model.overrides.l_text_seq_length to keep them whole"], messages
    assert not any("right text longer" in m for m in messages)


def test_metrics_csv_gets_a_column_per_task_as_tasks_appear(tmp_path):
    """A task first seen at a later step rewrites metrics.csv with its column; steps without it leave it empty; a
    resumed log (rows after the checkpoint dropped) keeps the columns of the rows it keeps."""
    from rudolph_ft.train.metrics import COLUMNS, MetricsLog

    log = MetricsLog(tmp_path)
    base = {"epoch": 0, "loss": 1.0, "lr": 1e-3, "grad_norm": 1.0, "samples_per_s": 1.0}
    log.log({"step": 1, **base, "task_loss/vqa": 2.5})
    log.log({"step": 2, **base, "task_loss/vqa": 2.0, "task_loss/captioning": 3.0})
    log.log({"step": 3, **base, "task_loss/captioning": 2.75})
    log.log({"step": 3, "val_loss": 1.5})  # an evaluation: jsonl only

    def table():
        with (tmp_path / "metrics.csv").open(newline="") as handle:
            return list(csv.reader(handle))

    header, *rows = table()
    assert header == [*COLUMNS, "task_loss/captioning", "task_loss/vqa"]
    assert [row[-2:] for row in rows] == [["", "2.5"], ["3.0", "2.0"], ["2.75", ""]]
    assert MetricsLog(tmp_path, truncate_after=1) and table() == [[*COLUMNS, "task_loss/vqa"], rows[0][:-2] + ["2.5"]]


# Training: per-task weights reach the loss -------------------------------------------------------------------------
def segment_losses(model: RuDolph, ids: torch.Tensor) -> list[torch.Tensor]:
    """(left, image, right) cross-entropies computed from the joint logits, as the reference slices them."""
    cfg = model.config
    L, image_end, text = cfg.l_text_seq_length, cfg.l_text_seq_length + cfg.image_seq_length, cfg.text_vocab_size
    logits = model(ids).logits.float()  # (B, T, V_text + V_image)
    left = torch.where(ids[:, :L] == 0, model.l_text_special_ids, ids[:, :L])
    left_labels = torch.cat([left[:, 1:], ids[:, L:L + 1]], dim=1)
    l_loss = F.cross_entropy(logits[:, :L, :text].flatten(0, 1), left_labels.flatten())
    image_loss = F.cross_entropy(logits[:, L:image_end - 1, text:].flatten(0, 1), ids[:, L + 1:image_end].flatten())
    right_labels = ids[:, image_end + 1:]
    r_loss = F.cross_entropy(logits[:, image_end:-1, :text].flatten(0, 1), right_labels.flatten(), ignore_index=0)
    return [l_loss, image_loss, r_loss]


def test_a_multitask_run_through_the_cli_weights_each_task(small_data, tmp_path, monkeypatch):
    """`rudolph-ft train` with tasks.path: per-task losses logged and plotted, and step 1's objective equals the
    task-weighted cross-entropies of the rows it drew, computed here from the logits."""
    seen = []
    original = Trainer._task_groups

    def recording(self, indices):
        groups = original(self, indices)
        if not seen:  # step 1, before any update: the weights the losses were computed with
            model = self.accelerator.unwrap_model(self.model)
            seen.append(({k: v.clone() for k, v in model.state_dict().items()}, model.config, groups))
        return groups

    monkeypatch.setattr(Trainer, "_task_groups", recording)
    run = tmp_path / "run"
    args = ["train", str(CONFIG), *tiny_overrides(small_data, run), "tasks.balanced=true",
            "tasks.loss_weights={vqa: [2, 1, 5]}", "train.max_steps=2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "tasks: 40 rows" in result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    assert (run / "task_losses.png").is_file()
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as handle:  # one column per task, as in the jsonl
        table = list(csv.DictReader(handle))
    tasks = sorted({key for row in rows for key in row if key.startswith("task_loss/")})
    assert tasks == ["task_loss/captioning", "task_loss/textqa", "task_loss/vqa"]
    assert list(table[0])[-3:] == tasks and list(table[0])[:3] == ["step", "epoch", "loss"]
    for row, logged in zip(table, rows, strict=True):
        assert [float(row[key]) if row[key] else None for key in tasks] == [logged.get(key) for key in tasks]

    state, config, groups = seen[0]
    expected_weights = {"captioning": (0.01, 1.0, 7.0), "textqa": (1.0, 0.01, 7.0), "vqa": (2.0, 1.0, 5.0)}
    assert len(groups) >= 2 and sum(len(ids) for _, _, ids in groups) == 12
    model = RuDolph(config).eval()  # (the run's dropout is 0: train-mode losses equal these)
    model.load_state_dict(state)
    total = 0.0
    with torch.no_grad():
        for name, weights, ids in groups:
            assert weights == expected_weights[name]
            if name == "textqa":
                assert not ids[:, 32:32 + 64].any()  # text-only rows: image codes 0
            losses = segment_losses(model, ids)
            task_loss = sum(w * loss for w, loss in zip(weights, losses, strict=True)) / sum(weights)
            assert float(task_loss) == pytest.approx(rows[0][f"task_loss/{name}"], rel=1e-5)
            total += float(task_loss) * len(ids) / 12
    assert total == pytest.approx(rows[0]["loss"], rel=1e-5)


# Validation loss per task (tasks.val_path) --------------------------------------------------------------------------
def test_a_validation_logs_each_tasks_loss_on_the_val_rows(small_data, tmp_path):
    """tasks.val_path: every validation point logs val_task_loss/<task> for each task of the table, equal to that
    task's loss recomputed here from the logits of the model of that point (checkpoints/step-1 for the evaluation
    every step, final/ for the final one): eval mode, no task-token dropout, the task's loss weights, batches of
    train.batch_size rows averaged by their rows. The plot draws them beside the training curves."""
    from rudolph_ft.components import load_components
    from rudolph_ft.train.config import load_train_config
    from rudolph_ft.train.data import task_examples

    run = tmp_path / "run"
    overrides = [*tiny_overrides(small_data, run, dropout=0.1, val=small_data / TASKS_VAL_FILE),
                 "train.max_steps=2", "eval.every=1", "checkpoint.every=1", "eval.final=true", "eval.samples=1",
                 "eval.captions_per_image=1", "tasks.loss_weights={vqa: [2, 1, 5]}"]
    messages = []
    Trainer(load_train_config(CONFIG, overrides), echo=messages.append).run()
    assert any("21 validation rows of" in m and "(textqa 15, vqa 6)" in m for m in messages), messages
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    validations = [row for row in rows if any(key.startswith("val_task_loss/") for key in row)]
    assert [row["step"] for row in validations] == [1, 2]
    assert any("validation loss per task (tasks.val_path): textqa" in m for m in messages), messages

    table = read_task_table(small_data / TASKS_VAL_FILE)
    weights = {"vqa": (2.0, 1.0, 5.0), "textqa": (1.0, 0.01, 7.0)}
    for row, model_dir in zip(validations, [run / "checkpoints" / "step-1", run / "final"], strict=True):
        assert sorted(key for key in row if key.startswith("val_task_loss/")) == ["val_task_loss/textqa",
                                                                                   "val_task_loss/vqa"]
        components = load_components(model_dir)
        model, config = components.model.eval(), components.model.config
        layout = TaskLayout(config, components.tokenizer)
        encoded = task_examples(table, components.vqgan, config.image_size, config.image_seq_length)
        codes = encoded.codes[encoded.image_of, 0]
        for name, task_weights in weights.items():
            indices = [i for i, r in enumerate(table.rows) if r.task == name]
            total = 0.0
            for start in range(0, len(indices), 12):  # train.batch_size rows a batch, as the run's validation
                chunk = indices[start:start + 12]
                ids = []
                for i in chunk:
                    left, right = get_task(name).training_rows(layout, table.rows[i].left_text,
                                                               table.rows[i].right_text, rng=random.Random(0),
                                                               token_dropout=0.0)
                    ids.append(torch.cat([left, codes[i], right]))
                with torch.no_grad():
                    losses = segment_losses(model, torch.stack(ids))
                loss = sum(w * x for w, x in zip(task_weights, losses, strict=True)) / sum(task_weights)
                total += float(loss) * len(chunk)
            logged = row[f"val_task_loss/{name}"]
            assert torch.isfinite(torch.tensor(logged))
            assert_scalar_close(logged, total / len(indices), reduction=longest_sum(config, rows=12),
                                msg=f"{model_dir.name}: val_task_loss/{name}")

    from rudolph_ft.train.plots import plot_task_losses

    assert (run / "task_losses.png").is_file()
    assert plot_task_losses(rows, tmp_path / "plot.png") == tmp_path / "plot.png"


def test_an_unreadable_val_table_is_a_config_error(small_data, tmp_path):
    from rudolph_ft.train.config import ConfigError, load_train_config

    missing = small_data / "no_such_val.jsonl"
    config = load_train_config(CONFIG, [*tiny_overrides(small_data, tmp_path / "run", val=missing),
                                        "train.max_steps=1"])
    with pytest.raises(ConfigError, match=r"tasks\.val_path: .*no_such_val\.jsonl.* does not exist"):
        Trainer(config, echo=lambda m: None).run()
    assert not (tmp_path / "run" / "bpe.model").exists()  # refused before any preparation
    bad = write_jsonl(tmp_path / "bad_val.jsonl", [{"task": "vqa", "left_text": "что это?", "right_text": "суп"}])
    config = load_train_config(CONFIG, [*tiny_overrides(small_data, tmp_path / "run2", val=bad), "train.max_steps=1"])
    with pytest.raises(ConfigError, match=r"tasks\.val_path: .*bad_val\.jsonl.*row 1 \(line 1\), field 'image'"):
        Trainer(config, echo=lambda m: None).run()
    # through the CLI: one line naming the field and the file, exit status 2 or 1, no traceback
    result = CliRunner().invoke(app, ["train", str(CONFIG), *tiny_overrides(small_data, tmp_path / "run3",
                                                                           val=missing)])
    assert result.exit_code != 0 and "tasks.val_path" in result.output and "no_such_val.jsonl" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(ConfigError, match="tasks.val_path .* set tasks.path too"):
        load_train_config(None, [f"tasks.val_path={missing}"])
