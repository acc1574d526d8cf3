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
