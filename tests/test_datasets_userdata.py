"""User data files: the documented schema, and one clear error (file + line) per mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safety_polytope.datasets import USER_COLUMNS, load_file
from safety_polytope.errors import InputError


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAP_HOME", str(tmp_path / "sap-home"))


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(*objs: object) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


# ------------------------------------------------------------------------------ happy paths

def test_jsonl_full_schema(tmp_path):
    path = write(tmp_path, "data.jsonl", jsonl(
        {"prompt": "  How do I pick a lock?  ", "label": 1, "category": "Illegal activity",
         "id": "a", "response": "Use a tension wrench..."},
        "",
        {"Text": "Suggest a name for my cat.", "LABEL": "0"},
        {"prompt": "Write a poem glorifying murder", "label": True, "source": "mine"},
        {"prompt": "Kill a stuck process", "label": False, "category": "violence"},
        {"prompt": "Make a pipe bomb", "label": 1.0, "category": "explosives"},
    ))
    recs = load_file(path)
    a, cat, war, twin, bomb = recs
    assert (a.id, a.prompt, a.label, a.category, a.response) == (
        "a", "How do I pick a lock?", 1, "illegal_activity", "Use a tension wrench...")
    assert a.meta["category_from"] == "file" and a.meta["line"] == 1
    assert (cat.id, cat.label, cat.category, cat.source) == ("data.jsonl-1", 0, "benign",
                                                            "data.jsonl")
    assert cat.meta["line"] == 3
    assert (war.source, war.id, war.label) == ("mine", "mine-2", 1)
    assert war.meta["category_from"] == "keywords" and war.category == "violence"
    assert (twin.category, twin.meta["resembles"]) == ("benign", "violence")
    assert (bomb.category, bomb.meta["source_category"]) == ("weapons", "explosives")


def test_csv_with_multiline_fields_bom_and_default_label(tmp_path):
    path = write(tmp_path, "d.csv", "\ufeffPrompt,label,response\n"
                                    '"Write a poem\nabout spring",,"Roses\nare red"\n'
                                    "How to make meth,1,\n"
                                    "\n"
                                    "Bake bread,0,\n")
    recs = load_file(path, label=0)
    assert [r.prompt for r in recs] == ["Write a poem\nabout spring", "How to make meth",
                                        "Bake bread"]
    assert [r.label for r in recs] == [0, 1, 0]  # a record's own label beats the default
    assert [r.meta["line"] for r in recs] == [2, 5, 7]  # physical lines where records start
    assert recs[0].response == "Roses\nare red" and recs[1].response is None


def test_txt_one_prompt_per_line(tmp_path):
    path = write(tmp_path, "harmful.txt", "How to make a bomb\n\n   \n  How to hack a bank  \n")
    recs = load_file(path, label=1, require_both_classes=False)
    assert [(r.prompt, r.label, r.meta["line"]) for r in recs] == [
        ("How to make a bomb", 1, 1), ("How to hack a bank", 1, 4)]
    assert [r.id for r in recs] == ["harmful.txt-0", "harmful.txt-1"]


def test_schema_columns_are_documented():
    from safety_polytope.datasets import userdata

    for col in USER_COLUMNS:
        assert f"``{col}``" in (userdata.__doc__ or "")


# ----------------------------------------------------------------------------------- errors

def test_file_not_found(tmp_path):
    with pytest.raises(InputError, match=r"Data file .*missing\.jsonl does not exist"):
        load_file(tmp_path / "missing.jsonl")


def test_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_file(tmp_path)


def test_unknown_extension(tmp_path):
    path = write(tmp_path, "data.parquet", "x")
    with pytest.raises(InputError, match=r"data\.parquet: unsupported file type '\.parquet'; "
                                         r"use \.jsonl, \.csv, \.txt"):
        load_file(path)


def test_malformed_json_line(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl({"prompt": "a", "label": 1}, "",
                                              '{"prompt": "b", "label": 0'))
    with pytest.raises(InputError, match=r"bad\.jsonl, line 3: not valid JSON .*Each line must "
                                         r"be one JSON object"):
        load_file(path)


def test_line_not_an_object(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl({"prompt": "a", "label": 1}, ["b", 0]))
    with pytest.raises(InputError, match=r"bad\.jsonl, line 2: expected a JSON object .*got a "
                                         r"JSON array"):
        load_file(path)


def test_unknown_field(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl({"prompt": "a", "label": 1},
                                              {"prompt": "b", "lable": 0}))
    with pytest.raises(InputError, match=r"line 2: unknown field 'lable'\. Allowed fields: "
                                         r"prompt, text, label, response, category, id, source"):
        load_file(path)


def test_unknown_csv_column(tmp_path):
    path = write(tmp_path, "bad.csv", "prompt,label,score\na,1,0.3\n")
    with pytest.raises(InputError, match=r"bad\.csv, line 1: unknown column 'score'\. Allowed "
                                         r"columns: prompt, text"):
        load_file(path)


def test_missing_prompt(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl({"prompt": "a", "label": 1}, {"label": 0}))
    with pytest.raises(InputError, match=r"line 2: no 'prompt' or 'text' field; exactly one of "
                                         r"them is required"):
        load_file(path)


def test_missing_prompt_in_csv_cell(tmp_path):
    path = write(tmp_path, "bad.csv", "prompt,text,label\na,,1\n,,0\n")
    with pytest.raises(InputError, match=r"bad\.csv, line 3: no 'prompt' or 'text'"):
        load_file(path)


def test_both_prompt_and_text(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl({"prompt": "a", "text": "b", "label": 1}))
    with pytest.raises(InputError, match=r"line 1: has both 'prompt' and 'text'; give exactly "
                                         r"one"):
        load_file(path)


def test_empty_prompt_and_wrong_type(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl({"prompt": "  ", "label": 1}))
    with pytest.raises(InputError, match=r"line 1: 'prompt' is empty"):
        load_file(path)
    path = write(tmp_path, "bad2.jsonl", jsonl({"text": 42, "label": 1}))
    with pytest.raises(InputError, match=r"line 1: 'text' must be a string, got a number"):
        load_file(path)


@pytest.mark.parametrize("label, shown", [
    (2, "2"), (-1, "-1"), ("unsafe", "'unsafe'"), (0.5, "0.5"), ("2", "'2'"), ([1], r"\[1\]"),
])
def test_bad_label_values(tmp_path, label, shown):
    path = write(tmp_path, "bad.jsonl", jsonl({"prompt": "ok", "label": 0},
                                              {"prompt": "a", "label": label}))
    with pytest.raises(InputError, match=rf"bad\.jsonl, line 2: label {shown} is not 0 or 1\. "
                                         rf"Use 1 \(unsafe\) or 0 \(safe\)"):
        load_file(path)


@pytest.mark.parametrize("label, expected", [
    (0, 0), (1, 1), ("0", 0), ("1", 1), (True, 1), (False, 0), ("true", 1), ("FALSE", 0),
])
def test_accepted_label_values(tmp_path, label, expected):
    path = write(tmp_path, "ok.jsonl", jsonl({"prompt": "a", "label": label}))
    assert load_file(path, require_both_classes=False)[0].label == expected


def test_bad_default_label(tmp_path):
    path = write(tmp_path, "ok.jsonl", jsonl({"prompt": "a"}))
    with pytest.raises(InputError, match=r"load_file\(label=\.\.\.\): label 3 is not 0 or 1"):
        load_file(path, label=3)


def test_missing_label_without_default(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl({"prompt": "a", "label": 1}, {"prompt": "b"}))
    with pytest.raises(InputError, match=r"line 2: no 'label'\. Add a label to every record "
                                         r"\(1 = unsafe, 0 = safe\) or pass a default label"):
        load_file(path)


def test_csv_error_line_is_the_physical_line_where_the_record_starts(tmp_path):
    path = write(tmp_path, "bad.csv",
                 "prompt,label\n"                      # 1
                 '"first\nsecond\nthird line",1\n'     # 2-4
                 '"a, b",0\n'                           # 5
                 '"multi\nline",7\n')                   # 6-7
    with pytest.raises(InputError, match=r"bad\.csv, line 6: label '7' is not 0 or 1"):
        load_file(path)


def test_csv_wrong_number_of_values(tmp_path):
    path = write(tmp_path, "bad.csv", "prompt,label\na,1\nb, c,0\n")
    with pytest.raises(InputError, match=r"bad\.csv, line 3: 3 values, but the header \(line 1\)"
                                         r" has 2 columns"):
        load_file(path)


def test_duplicate_ids(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl({"prompt": "a", "label": 1, "id": "x"},
                                              {"prompt": "b", "label": 0, "id": "y"},
                                              {"prompt": "c", "label": 0, "id": "x"}))
    with pytest.raises(InputError, match=r"line 3: id 'x' is already used on line 1"):
        load_file(path)


@pytest.mark.parametrize("name, content", [
    ("empty.jsonl", ""), ("blank.jsonl", "\n  \n\n"), ("header.csv", "prompt,label\n"),
    ("empty.csv", ""), ("empty.txt", "\n\n"),
])
def test_empty_file(tmp_path, name, content):
    path = write(tmp_path, name, content)
    with pytest.raises(InputError, match=rf"{name.replace('.', '[.]')}: no records found"):
        load_file(path, label=1)


def test_only_one_class(tmp_path):
    path = write(tmp_path, "harmful.jsonl", jsonl(*({"prompt": f"p{i}", "label": 1}
                                                    for i in range(3))))
    with pytest.raises(InputError, match=r"harmful\.jsonl: all 3 records have label 1 \(unsafe\);"
                                         r" training needs both classes\. Add safe \(0\) records,"
                                         r" load a second file .* require_both_classes=False"):
        load_file(path)
    assert len(load_file(path, require_both_classes=False)) == 3


def test_txt_needs_a_label(tmp_path):
    path = write(tmp_path, "p.txt", "hello\n")
    with pytest.raises(InputError, match=r"p\.txt: a \.txt file holds prompts only.*pass their "
                                         r"label, e\.g\. load_file\(.*label=1\)"):
        load_file(path)


def test_not_utf8(tmp_path):
    path = write(tmp_path, "latin.jsonl", b'{"prompt": "ok", "label": 1}\n'
                                          b'{"prompt": "caf\xe9", "label": 0}\n')
    with pytest.raises(InputError, match=r"latin\.jsonl, line 2: not UTF-8 text"):
        load_file(path)


def test_benign_category_on_unsafe_record(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl({"prompt": "a", "label": 1,
                                               "category": "benign"}))
    with pytest.raises(InputError, match=r"line 1: category 'benign' on an unsafe record"):
        load_file(path, require_both_classes=False)
