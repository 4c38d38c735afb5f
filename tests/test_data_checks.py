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
