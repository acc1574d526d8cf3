"""Dataset loading and column detection, with errors that name the file and the column."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from runners import data
from runners.errors import UserError
from runners.spec import DatasetSpec, from_dict


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"sentence": ["a b", "c d", "e f", "g h"], "labels": [0, 1, 0, 1]})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".tsv"])
def test_load_every_file_type(tmp_path: Path, frame: pd.DataFrame, suffix: str) -> None:
    path = tmp_path / f"d{suffix}"
    {".csv": lambda: frame.to_csv(path, index=False), ".tsv": lambda: frame.to_csv(path, sep="\t", index=False),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     ".parquet": lambda: frame.to_parquet(path)}[suffix]()
    loaded = data.load_table(str(path))
    assert list(loaded.columns) == ["sentence", "labels"] and len(loaded) == 4


def test_detects_roles_and_names_missing_columns(frame: pd.DataFrame) -> None:
    assert data.detect_columns(frame, DatasetSpec(), "seq-cls") == {"text": "sentence", "label": "labels"}
    with pytest.raises(UserError, match=r"no column 'review'.*Its columns are: sentence, labels"):
        data.detect_columns(frame, DatasetSpec(text_column="review"), "seq-cls", "d.csv")
    with pytest.raises(UserError, match="no target column"):
        data.detect_columns(frame[["sentence"]], DatasetSpec(), "seq2seq")


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        data.load_table(str(tmp_path / "nope.csv"))
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(UserError, match="cannot be read as PARQUET"):
        data.load_table(str(bad))


def test_split_is_seeded_and_capped(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": [i % 2 for i in range(100)]}).to_csv(path, index=False)
    spec = from_dict({"dataset": {"train": str(path), "eval_fraction": 0.2, "max_train_samples": 50}})
    train, evaluation = data.load_splits(spec)
    again, _ = data.load_splits(spec)
    assert len(train) == 50 and len(evaluation) == 20
    assert list(train["text"]) == list(again["text"])
    assert not set(train["text"]) & set(evaluation["text"])


def _scan(path: Path, roles: dict[str, str] | None = None) -> data.DataScan:
    return data.scan_file(str(path), roles or {"text": "text", "label": "label"})


def test_scan_numbers_rows_past_quoted_newlines_and_skipped_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text('text\tlabel\n"two\nlines"\t1\ntoo\tmany\tfields\nfine\t0\n\t1\n  \t0\nlast\t\n')
    scan = _scan(path)
    problems = "\n".join(scan.problems(drop_empty=False))
    assert "1 ragged row (data row 2: 3 fields where the header has 2" in problems
    assert "column 'text' (the text column) is empty in 2 of 5 rows (data rows 4, 5;" in problems
    assert "column 'label' (the label column) is empty in 1 of 5 rows (data row 6;" in problems
    assert scan.empty_rows == 3 and scan.rows == 5
    # drop_empty turns the empty rows into a count, not an error; ragged rows stay an error
    assert [p for p in scan.problems(drop_empty=True) if "empty" in p] == []


def test_scan_parquet_text_column_types(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": [["a"], ["b"], None], "sentence": [1.5, 2.0, 3.0], "label": [0, 1, None]}).to_parquet(path)
    problems = "\n".join(_scan(path).problems(False))
    assert "column 'text' (the text column) holds list<element: string> values, not text, in 2 rows (rows 1, 2)" in problems
    assert "column 'label' (the label column) is empty in 1 of 3 rows (row 3;" in problems
    assert "holds only numbers" in "\n".join(_scan(path, {"text": "sentence", "label": "label"}).problems(False))


def test_clean_data_passes_and_runner_gets_str_texts(tmp_path: Path) -> None:
    """Digits in a text column that pandas types as numbers reach the tokenizer as str, not int."""
    path = tmp_path / "d.jsonl"
    rows = [{"text": f"review {i}", "label": i % 2} for i in range(40)] + [{"text": 12345, "label": 1}]
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    assert _scan(path).problems(False) == []  # a number among texts is text to pandas' object column
    spec = from_dict({"dataset": {"train": str(path), "eval_fraction": 0.1}})
    train, evaluation = data.load_splits(spec)
    assert all(isinstance(v, str) for v in list(train["text"]) + list(evaluation["text"]))
