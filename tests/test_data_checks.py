"""`check_data`: every exclusion reason, notes, table formats, and the report object."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from rudolph_ft.data import CaptionRules, DataConfig, DataError, check_data, food_config
from rudolph_ft.data.tables import read_table

N5K = Path(__file__).parent / "assets" / "data" / "nutrition5k"
HEADER = "index,belok,fats,uglevod,kkal,name,path"


def _photo_folder(tmp_path: Path) -> Path:
    """A folder with good, duplicated and broken images."""
    folder = tmp_path / "food"
    (folder / "images").mkdir(parents=True)
    for k, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)], start=1):
        Image.new("RGB", (160, 160), colour).save(folder / f"images/good{k}.jpg", quality=90)
    shutil.copy(folder / "images/good1.jpg", folder / "images/copy_of_good1.jpg")
    (folder / "images/empty.jpg").write_bytes(b"")
    data = (N5K / "dish_1550704750/camera_A_frame_001.jpeg").read_bytes()
    (folder / "images/cut.jpg").write_bytes(data[: len(data) // 2])
    (folder / "images/noise.jpg").write_bytes(bytes(range(256)) * 8)
    return folder


def _write_csv(folder: Path, rows: list[str], name: str = "data.csv") -> Path:
    path = folder / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


BAD_ROWS = [
    "0,10,5,20,200,борщ,images/good1.jpg",  # row 1: kept
    "1,nan,5,20,200,борщ,images/good2.jpg",  # row 2: NaN
    "2,10,-1,20,200,борщ,images/good2.jpg",  # row 3: negative
    "3,10,5,abc,200,борщ,images/good2.jpg",  # row 4: non-numeric
    "4,10,5,20,\"1,5\",борщ,images/good2.jpg",  # row 5: decimal comma
    "5,10,5,20,,борщ,images/good2.jpg",  # row 6: empty number
    "6,10,5,20,200,,images/good2.jpg",  # row 7: empty name
    "7,10,5,20,200,борщ,images/nowhere.jpg",  # row 8: missing file
    "8,10,5,20,200,борщ,images/empty.jpg",  # row 9: zero bytes
    "9,10,5,20,200,борщ,images/cut.jpg",  # row 10: truncated
    "10,10,5,20,200,борщ,images/noise.jpg",  # row 11: corrupt
    "11,10,5,20,200,борщ,images/copy_of_good1.jpg",  # row 12: duplicate of row 1
    "12,10,5,20,200," + "очень " * 12 + "длинное название,images/good3.jpg",  # row 13: caption too long
    "13,10,5,20,200,борщ,images/good3.jpg,extra",  # row 14: one cell too many
    "14,10,5,20,200,БОРЩ,images/good2.jpg",  # row 15: kept (good2's earlier rows were all excluded)
]
EXPECTED = {
    2: {"nan_value"}, 3: {"negative_value"}, 4: {"non_numeric"}, 5: {"non_numeric"}, 6: {"nan_value"},
    7: {"empty_value"}, 8: {"missing_file"}, 9: {"zero_byte_file"}, 10: {"truncated_image"}, 11: {"corrupt_image"},
    12: {"duplicate_image"}, 13: {"caption_too_long"}, 14: {"bad_row"},
}


@pytest.fixture
def bad_report(tmp_path):
    folder = _photo_folder(tmp_path)
    _write_csv(folder, BAD_ROWS)
    return check_data(food_config(folder))


def test_every_bad_row_is_excluded_with_its_reason(bad_report):
    found = {item.row: {issue.code for issue in item.issues} for item in bad_report.excluded}
    assert found == EXPECTED
    assert [record.row for record in bad_report.kept] == [1, 15]
    assert bad_report.total_rows == 15 and not bad_report.ok


def test_kept_records_carry_caption_meta_and_key(bad_report):
    first, last = bad_report.kept
    assert first.caption == "блюдо: борщ; белков: 10; жиров: 5; углеводов: 20; ккал: 200;"
    assert last.caption.startswith("блюдо: борщ;")  # lower-cased
    assert first.meta == {"index": "0", "belok": 10.0, "fats": 5.0, "uglevod": 20.0, "kkal": 200.0, "name": "борщ"}
    assert first.key == f"images/good1.jpg#{first.sha256[:16]}" and len(first.sha256) == 64


def test_messages_name_the_column_file_and_fix(bad_report):
    messages = {item.row: " ".join(issue.message for issue in item.issues) for item in bad_report.excluded}
    assert "'belok'" in messages[2] and "'fats'" in messages[3] and "-1" in messages[3]
    assert "use a dot as the decimal separator" in messages[5]
    assert "'name' is empty" in messages[7]
    assert "nowhere.jpg" in messages[8] and "images root" in messages[8]
    assert "same image content as row 1" in messages[12]
    assert "has 8 cells but the header has 7" in messages[14]


def test_summary_and_json_list_each_exclusion(bad_report):
    text = bad_report.summary()
    assert "rows: 15, kept: 2, excluded: 13" in text
    assert "row 10 (line 11) images/cut.jpg: truncated image" in text
    as_json = json.loads(json.dumps(bad_report.to_dict(), ensure_ascii=False))
    assert as_json["reasons"]["nan_value"] == 2 and as_json["kept"] == 2
    assert [row["row"] for row in as_json["excluded_rows"]] == sorted(EXPECTED)


def test_without_reading_images_only_existence_and_size_are_checked(tmp_path):
    folder = _photo_folder(tmp_path)
    _write_csv(folder, BAD_ROWS)
    report = check_data(food_config(folder), read_images=False)
    found = {item.row: {issue.code for issue in item.issues} for item in report.excluded}
    assert 10 not in found and 11 not in found and 12 not in found  # not decoded, not hashed
    assert found[9] == {"zero_byte_file"} and found[8] == {"missing_file"}
    assert all(record.sha256 is None for record in report.kept)


def test_caption_length_bounds_are_exclusive_and_configurable(tmp_path):
    folder = _photo_folder(tmp_path)
    _write_csv(folder, ["0,1,1,1,1,a,images/good1.jpg", "1,1,1,1,1,b,images/good2.jpg"])
    rules = CaptionRules(template="{name}{kkal}", min_chars=2, max_chars=None)  # "a1": 2 chars, not > 2
    report = check_data(food_config(folder, caption=rules))
    assert {item.issues[0].code for item in report.excluded} == {"caption_too_short"}
    report = check_data(food_config(folder, caption=CaptionRules(template="{name}{kkal}", min_chars=1)))
    assert report.ok and [r.caption for r in report.kept] == ["a1", "b1"]


def test_duplicates_can_be_kept(tmp_path):
    folder = _photo_folder(tmp_path)
    _write_csv(folder, ["0,1,1,1,1,a,images/good1.jpg", "1,1,1,1,1,b,images/copy_of_good1.jpg"])
    assert not check_data(food_config(folder)).ok
    assert check_data(food_config(folder, drop_duplicates=False)).ok


def test_real_nutrition5k_samples():
    report = check_data(food_config(N5K))
    assert (report.total_rows, len(report.kept)) == (7, 6)
    (excluded,) = report.excluded
    assert excluded.row == 7 and excluded.issues[0].code == "caption_too_long"
    (note,) = report.notes
    assert note.row == 6 and "depth_raw.png" in note.image and "16-bit" in note.message


def test_article_csv_with_other_header_names_is_renamed_by_position(tmp_path):
    folder = _photo_folder(tmp_path)
    path = folder / "food.csv"
    path.write_text(",protein,fat,carbs,kcal,dish,file\n0,1,2,3,40,блины,images/good1.jpg\n", encoding="utf-8")
    report = check_data(food_config(path))
    assert report.ok and report.kept[0].caption == "блюдо: блины; белков: 1; жиров: 2; углеводов: 3; ккал: 40;"
    assert "renamed by position" in report.notes[0].message


def test_semicolon_cp1251_csv_from_excel(tmp_path):
    folder = _photo_folder(tmp_path)
    text = "index;belok;fats;uglevod;kkal;name;path\r\n0;1;2;3;40;щи;images/good1.jpg\r\n"
    (folder / "labels.csv").write_bytes(text.encode("cp1251"))
    report = check_data(food_config(folder))
    assert report.ok and report.kept[0].meta["name"] == "щи"
    assert any("Windows-1251" in note.message for note in report.notes)


def test_generic_jsonl_with_a_template(tmp_path):
    folder = _photo_folder(tmp_path)
    lines = [
        {"img": "images/good1.jpg", "dish": "Суп", "kcal": 120, "photographer": None},
        {"img": "images/good2.jpg", "dish": "каша", "kcal": -3},
        "this line is not json",
    ]
    (folder / "data.jsonl").write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines) + "\n",
        encoding="utf-8",
    )
    rules = CaptionRules(template="блюдо: {dish}; ккал: {kcal};")
    config = DataConfig(path=str(folder), image_column="img", caption=rules, numeric_columns=("kcal",))
    report = check_data(config)
    assert [r.caption for r in report.kept] == ["блюдо: суп; ккал: 120;"]
    assert report.kept[0].meta == {"dish": "Суп", "kcal": 120.0, "photographer": ""}
    codes = {item.row: item.issues[0].code for item in report.excluded}
    assert codes == {2: "negative_value", 3: "bad_row"}


def test_configuration_errors_name_the_columns(tmp_path):
    folder = _photo_folder(tmp_path)
    (folder / "data.csv").write_text("file,text\nimages/good1.jpg,борщ\n", encoding="utf-8")
    with pytest.raises(DataError, match="lacks column"):
        check_data(food_config(folder))
    with pytest.raises(DataError, match="no column.*'dish'|dish"):
        check_data(DataConfig(path=str(folder), image_column="file", caption=CaptionRules(template="{dish}")))
    assert check_data(DataConfig(path=str(folder), image_column="file", caption=CaptionRules(column="text",
                                                                                              min_chars=None))).ok
    with pytest.raises(DataError, match="does not exist"):
        check_data(food_config(tmp_path / "nothing"))
    with pytest.raises(DataError, match="without a label table"):
        check_data(food_config(tmp_path))


def test_read_table_reports_line_numbers_with_multiline_cells(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('a,b\n1,"two\nlines"\n\n3,4\n', encoding="utf-8")
    table = read_table(path)
    assert [(row.row, row.line) for row in table.rows] == [(1, 2), (2, 5)]
    assert table.rows[0].values == {"a": "1", "b": "two\nlines"}


# ---- inputs refused safely: paths leaving the images root, content never echoed, duplicate labels ----------
SECRET = b"root:x:0:0:TOP-SECRET-CONTENT\n"


def _outside_rows(tmp_path: Path) -> tuple[Path, Path]:
    """A photo folder whose table points outside its root three ways; returns (folder, the outside file)."""
    folder = _photo_folder(tmp_path)
    outside = tmp_path / "elsewhere" / "secret.jpg"
    outside.parent.mkdir()
    outside.write_bytes(SECRET)
    (folder / "images" / "link.jpg").symlink_to(outside)
    _write_csv(folder, [
        "0,10,5,20,200,борщ,images/good1.jpg",
        "1,10,5,20,200,борщ,../../../etc/passwd",
        f"2,10,5,20,200,борщ,{outside}",
        "3,10,5,20,200,борщ,images/link.jpg",
    ])
    return folder, outside


def _spy_opens(monkeypatch) -> list[str]:
    """Record every file opened through Python (open, io.open, os.open, Path.read_bytes, PIL's Image.open)."""
    import builtins
    import io
    import os

    from PIL import Image as PILImage

    opened: list[str] = []
    real_open, real_os_open, real_pil_open = io.open, os.open, PILImage.open

    def spy_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_os_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_os_open(path, *args, **kwargs)

    def spy_pil_open(file, *args, **kwargs):
        opened.append(str(getattr(file, "name", file)))
        return real_pil_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", spy_open)
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    monkeypatch.setattr(PILImage, "open", spy_pil_open)
    return opened


@pytest.mark.parametrize("read_images", [True, False])
def test_paths_outside_the_images_root_are_excluded_unopened(tmp_path, monkeypatch, read_images):
    folder, outside = _outside_rows(tmp_path)
    opened = _spy_opens(monkeypatch)
    report = check_data(food_config(folder), read_images=read_images)
    assert [record.row for record in report.kept] == [1]
    found = {item.row: [issue.code for issue in item.issues] for item in report.excluded}
    assert found == {2: ["outside_root"], 3: ["outside_root"], 4: ["outside_root"]}
    assert any(path.endswith("good1.jpg") for path in opened) == read_images  # the spy sees reads
    assert not [path for path in opened if "secret" in path or "passwd" in path or "link.jpg" in path]
    text = report.summary() + json.dumps(report.to_dict(), ensure_ascii=False)
    assert text.count("outside the images root") >= 3 and "--allow-outside-root" in text
    assert "TOP-SECRET" not in text and "root:x" not in text and SECRET[:8].hex(" ") not in text


def test_allow_outside_root_accepts_an_image_kept_elsewhere(tmp_path):
    folder, outside = _outside_rows(tmp_path)
    shutil.copy(folder / "images/good2.jpg", outside)
    _write_csv(folder, ["0,10,5,20,200,борщ,images/good1.jpg", f"1,10,5,20,200,щи,{outside}"])
    assert [item.issues[0].code for item in check_data(food_config(folder)).excluded] == ["outside_root"]
    report = check_data(food_config(folder, allow_outside_root=True))
    assert report.ok and [record.image_path for record in report.kept][1] == outside


def test_run_config_data_allow_outside_root_reaches_the_dataset(tmp_path):
    from rudolph_ft.train.config import load_train_config
    from rudolph_ft.train.prepare import run_dataset

    folder, outside = _outside_rows(tmp_path)
    shutil.copy(folder / "images/good2.jpg", outside)
    _write_csv(folder, ["0,10,5,20,200,борщ,images/good1.jpg", f"1,10,5,20,200,щи,{outside}"])
    refused = run_dataset(load_train_config(overrides=[f"data.path={folder}"]).data, 64)
    assert len(refused) == 1 and refused.report.excluded[0].issues[0].code == "outside_root"
    config = load_train_config(overrides=[f"data.path={folder}", "data.allow_outside_root=true"])
    assert config.data.allow_outside_root is True and len(run_dataset(config.data, 64)) == 2


def test_messages_never_echo_file_content(tmp_path):
    folder = _photo_folder(tmp_path)
    (folder / "images/text.jpg").write_bytes(SECRET)
    _write_csv(folder, ["0,10,5,20,200,борщ,images/text.jpg"])
    report = check_data(food_config(folder))
    (issue,) = report.excluded[0].issues
    assert issue.code == "corrupt_image" and "text.jpg" in issue.message
    for shown in (SECRET[:4].hex(" "), "TOP-SECRET", "root:x"):
        assert shown not in report.summary()
    # a file that is no label table at all: its first line is not echoed as "columns"
    (tmp_path / "not_a_table.csv").write_bytes(SECRET)
    with pytest.raises(DataError) as caught:
        check_data(food_config(tmp_path / "not_a_table.csv"))
    assert "TOP-SECRET" not in str(caught.value) and "root:x" not in str(caught.value)
    assert "not look like column names" in str(caught.value)


def test_duplicates_with_different_labels_are_warned_about(tmp_path):
    folder = _photo_folder(tmp_path)
    _write_csv(folder, ["0,10,5,20,200,борщ,images/good1.jpg", "1,10,5,20,200,щи,images/copy_of_good1.jpg",
                        "2,10,5,20,200,каша,images/good2.jpg"])
    report = check_data(food_config(folder))
    (dropped,) = report.excluded
    assert dropped.row == 2 and "'щи'" in dropped.issues[0].message and "'борщ'" in dropped.issues[0].message
    text = report.summary()
    warning = next(line for line in text.splitlines() if line.startswith("WARNING"))
    assert "different" in warning and text.index("WARNING") < text.index("excluded rows:")
    assert "'щи'" in text and "'борщ'" in text
    (conflict,) = report.to_dict()["duplicate_label_conflicts"]
    assert conflict == {"row": 2, "image": "images/copy_of_good1.jpg", "label": "щи", "kept_row": 1,
                        "kept_image": "images/good1.jpg", "kept_label": "борщ", "field": "name"}


def test_duplicates_with_the_same_label_get_a_plain_note(tmp_path):
    folder = _photo_folder(tmp_path)
    _write_csv(folder, ["0,10,5,20,200,борщ,images/good1.jpg", "1,10,5,20,200,Борщ,images/copy_of_good1.jpg"])
    report = check_data(food_config(folder))
    (dropped,) = report.excluded
    message = dropped.issues[0].message
    assert "same image content as row 1" in message and "'Борщ'" in message and "only the first" in message
    assert "WARNING" not in report.summary() and report.to_dict()["duplicate_label_conflicts"] == []
