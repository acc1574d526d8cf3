"""Datasets for every runner: CSV/TSV/JSONL/JSON/parquet files or a datasets hub id, column roles
detected (or mapped in the spec), a seeded train/eval split, and sample caps.

Everything that can be wrong with the data (missing file, unreadable file, missing column, and in a scan of
every row: undecodable bytes, malformed lines, ragged rows, empty texts or labels, text columns without text)
is found by :func:`preflight` before a run dir is created, with a message that names the file, the column and
the rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from runners.errors import UserError
from runners.spec import DatasetSpec, RunSpec

FILE_TYPES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
TEXT_NAMES = ("text", "sentence", "content", "review", "document", "input", "prompt", "question", "sentence1",
              "text_a", "premise")
PAIR_NAMES = ("text_pair", "sentence2", "text_b", "hypothesis", "context")
LABEL_NAMES = ("label", "labels", "target", "class", "score", "y")
TARGET_NAMES = ("target", "summary", "output", "response", "answer", "completion", "labels_text")
EMBEDDING_ROLES = ("anchor", "positive", "negative")


def load_table(source: str, hub_config: str | None = None, nrows: int | None = None) -> Any:
    """A pandas DataFrame from a local file or a datasets hub id (train split)."""
    import pandas as pd

    path = Path(source).expanduser()
    if path.suffix.lower() in FILE_TYPES or path.exists():
        if not path.is_file():
            raise UserError(f"Dataset file '{source}' does not exist. Check the path (relative paths in a spec are "
                            "relative to the spec file).")
        suffix = path.suffix.lower()
        try:
            if suffix in (".csv", ".tsv"):
                return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", nrows=nrows)
            if suffix in (".jsonl", ".json"):
                frame = pd.read_json(path, lines=suffix == ".jsonl" or _looks_jsonl(path), nrows=nrows)
                return frame
            if suffix == ".parquet":
                frame = pd.read_parquet(path)
                return frame.head(nrows) if nrows else frame
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise UserError(f"Dataset file '{source}' cannot be read as {suffix[1:].upper()}: {exc}. "
                            "Fix the file or convert it to CSV, JSONL or parquet.") from exc
        raise UserError(f"Dataset file '{source}' has an unsupported type '{suffix}'. Use CSV, TSV, JSONL or parquet.")
    try:
        from datasets import load_dataset

        frame = load_dataset(source, hub_config, split="train").to_pandas()
    except Exception as exc:  # noqa: BLE001 - any hub failure is the same user-facing problem
        raise UserError(f"Dataset '{source}' is neither a local file nor a loadable datasets hub id ({type(exc).__name__}: "
                        f"{str(exc)[:200]}). Pass a CSV/JSONL/parquet path, or a hub id when the hub is reachable.") from exc
    return frame.head(nrows) if nrows else frame


def _looks_jsonl(path: Path) -> bool:
    with path.open("rb") as fh:
        first = fh.readline().strip()
    return first.startswith(b"{") and first.endswith(b"}")


def _pick(columns: list[str], wanted: str | None, names: tuple[str, ...], role: str, ds_source: str,
          required: bool = True) -> str | None:
    if wanted:
        if wanted not in columns:
            raise UserError(f"Dataset '{ds_source}' has no column '{wanted}' (the spec's {role} column). "
                            f"Its columns are: {', '.join(columns)}. Set dataset.{role}_column to one of them.")
        return wanted
    lower = {c.lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    if required:
        raise UserError(f"Dataset '{ds_source}' has no {role} column ftui recognises (looked for "
                        f"{', '.join(names[:6])}). Its columns are: {', '.join(columns)}. "
                        f"Set dataset.{role}_column in the spec.")
    return None


def detect_columns(df: Any, ds: DatasetSpec, task: str, source: str = "dataset") -> dict[str, str]:
    """Column roles for the task: text (+ text_pair), label, or target; anchor/positive/negative/score."""
    columns = [str(c) for c in df.columns]
    mapping = dict(ds.columns)
    for role, col in mapping.items():
        if col not in columns:
            raise UserError(f"Dataset '{source}' has no column '{col}' (dataset.columns.{role}). "
                            f"Its columns are: {', '.join(columns)}.")
    if task == "embedding":
        if "anchor" in columns or "anchor" in mapping:
            roles = {r: mapping.get(r, r) for r in EMBEDDING_ROLES if r in mapping or r in columns}
            return roles
        roles = dict(mapping)
        roles.setdefault("text", _pick(columns, ds.text_column, TEXT_NAMES, "text", source))
        pair = _pick(columns, ds.text_pair_column, PAIR_NAMES, "text_pair", source, required=False)
        if pair:
            roles.setdefault("text_pair", pair)
        label = _pick(columns, ds.label_column, LABEL_NAMES, "label", source, required=False)
        if label:
            roles.setdefault("label", label)
        return {k: v for k, v in roles.items() if v}
    roles = {"text": mapping.get("text") or _pick(columns, ds.text_column, TEXT_NAMES, "text", source)}
    pair = mapping.get("text_pair") or _pick(columns, ds.text_pair_column, PAIR_NAMES, "text_pair", source, required=False)
    if pair and pair != roles["text"]:
        roles["text_pair"] = pair
    if task in ("seq-cls", "token-cls"):
        roles["label"] = mapping.get("label") or _pick(columns, ds.label_column, LABEL_NAMES, "label", source)
    elif task == "seq2seq":
        roles["target"] = mapping.get("target") or _pick(columns, ds.label_column, TARGET_NAMES, "target", source)
    return roles


def _clean(frame: Any, spec: RunSpec, source: str) -> Any:
    """The preflight's policy applied at run time: rows with an empty role column dropped when
    dataset.drop_empty is set, and text columns as str (pandas types a chunk of digits as numbers)."""
    roles = detect_columns(frame, spec.dataset, spec.task, source)
    if getattr(spec.dataset, "drop_empty", False):
        frame = drop_empty_rows(frame, roles)
    for role, col in roles.items():
        if role in TEXT_ROLES and frame[col].dtype == object:
            frame[col] = frame[col].map(lambda v: v if isinstance(v, (str, float)) or v is None else str(v))
    return frame


def load_splits(spec: RunSpec) -> tuple[Any, Any]:
    """(train, eval) DataFrames: the eval file, or a seeded split of the train file; caps applied."""
    ds = spec.dataset
    train = _clean(load_table(ds.train, ds.hub_config), spec, ds.train)
    if ds.eval:
        evaluation = _clean(load_table(ds.eval, ds.hub_config), spec, ds.eval)
    else:
        shuffled = train.sample(frac=1.0, random_state=ds.seed).reset_index(drop=True)
        n_eval = max(1, int(len(shuffled) * ds.eval_fraction))
        evaluation, train = shuffled.iloc[:n_eval].reset_index(drop=True), shuffled.iloc[n_eval:].reset_index(drop=True)
    if ds.max_train_samples:
        train = train.iloc[: ds.max_train_samples]
    if ds.max_eval_samples:
        evaluation = evaluation.iloc[: ds.max_eval_samples]
    if len(train) == 0:
        raise UserError(f"Dataset '{ds.train}' leaves no training rows after the eval split and caps. Add rows or "
                        "lower dataset.eval_fraction.")
    return train, evaluation


def preflight(spec: RunSpec) -> dict[str, str]:
    """Detect the columns from the head of each data file, then scan every row of it (:func:`scan_file`):
    every data error surfaces before launch."""
    if not spec.dataset.train:
        raise UserError("The spec has no dataset.train: give a CSV/JSONL/parquet path or a datasets hub id.")
    head = load_table(spec.dataset.train, spec.dataset.hub_config, nrows=50)
    if len(head) == 0:
        raise UserError(f"Dataset '{spec.dataset.train}' has no rows.")
    roles = detect_columns(head, spec.dataset, spec.task, spec.dataset.train)
    sources = [(spec.dataset.train, roles)]
    if spec.dataset.eval:
        sources.append((spec.dataset.eval, detect_columns(load_table(spec.dataset.eval, spec.dataset.hub_config, nrows=50),
                                                          spec.dataset, spec.task, spec.dataset.eval)))
    drop = bool(getattr(spec.dataset, "drop_empty", False))
    for source, file_roles in sources:
        scan = scan_file(source, file_roles, spec.dataset.hub_config)
        scan.raise_problems(drop)
        if drop and scan.empty_rows:
            if scan.empty_rows >= scan.rows:
                raise UserError(f"Dataset '{source}': every one of its {scan.rows:,} rows has an empty text or label, "
                                "so dataset.drop_empty would leave nothing to train on. Fill the columns "
                                f"{', '.join(file_roles.values())}.")
            import sys

            print(f"ftui: warning: dataset '{source}': dropping {scan.empty_rows:,} of {scan.rows:,} rows with an empty "
                  f"text or label (dataset.drop_empty: true)", file=sys.stderr)
    return roles


def label_list(train: Any, evaluation: Any, column: str) -> list[Any]:
    """Sorted distinct labels over both splits, so ids agree between them."""
    values = set(train[column].tolist()) | set(evaluation[column].tolist())
    return sorted(values, key=lambda v: (str(type(v)), v))


# -- the whole-file scan ------------------------------------------------------------------------------------
# Everything that would stop a run on its data is found here, in one streaming pass over each file, before a
# run dir exists: undecodable bytes, malformed JSONL lines, ragged CSV rows, empty texts and labels, and text
# columns that hold no text. It reads in bounded chunks (pyarrow's single-threaded CSV reader is the fastest
# on a shared 2-core machine and numbers rows exactly), so RAM stays flat on large files.

TEXT_ROLES = ("text", "text_pair", "target", "anchor", "positive", "negative")
# pandas' default missing-value markers: the runner reads CSV with pandas, which turns these into NaN.
PANDAS_NA = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
             "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
NUMBER_RE = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
LISTED = 5  # row numbers quoted per problem
CSV_BLOCK = 2 << 20  # pyarrow's streaming reader holds ~36 blocks in flight: ~75 MiB


class DataScan:
    """What one pass over a data file found; :meth:`raise_problems` turns it into one UserError."""

    def __init__(self, source: str, roles: dict[str, str], unit: str) -> None:
        self.source, self.unit = source, unit
        self.columns = {col: role for role, col in roles.items()}
        self.rows = 0
        self.empty: dict[str, list] = {col: [0, []] for col in self.columns}  # column -> [count, first rows]
        self.empty_rows = 0  # rows with at least one empty role column: what drop_empty drops
        self.text_cols = {col for col, role in self.columns.items() if role in TEXT_ROLES}
        self.numeric_only = set(self.text_cols)  # text columns in which every value so far is a number
        self.has_values: set[str] = set()
        self.not_text: dict[str, list] = {}  # column -> [count, first rows, type name]
        self.bad: dict[str, list] = {}  # problem kind -> [count, [(row, detail)]]
        self.fatal: str | None = None  # the file could not be read to its end

    def add_bad(self, kind: str, row: int | None, detail: str) -> None:
        entry = self.bad.setdefault(kind, [0, []])
        entry[0] += 1
        if len(entry[1]) < LISTED:
            entry[1].append((row, detail))

    def _rows(self, rows: list[int], count: int) -> str:
        text = ", ".join(str(r) for r in rows)
        return f"{self.unit}s {text}{', ...' if count > len(rows) else ''}" if count > 1 else f"{self.unit} {text}"

    def problems(self, drop_empty: bool) -> list[str]:
        out: list[str] = []
        if self.fatal:
            out.append(self.fatal)
        for kind, (count, hits) in self.bad.items():
            where = "; ".join(f"{self.unit} {r}: {d}" if r is not None else d for r, d in hits)
            out.append(f"{count} {kind}{'s' if count > 1 else ''} ({where}{'; ...' if count > len(hits) else ''})")
        for col, (count, rows, kind) in self.not_text.items():
            out.append(f"column '{col}' (the {self.columns[col]} column) holds {kind} values, not text, in {count} "
                       f"{self.unit}{'s' if count > 1 else ''} ({self._rows(rows, count)}): make them strings")
        for col in sorted(self.numeric_only & self.has_values):
            out.append(f"column '{col}' (the {self.columns[col]} column) holds only numbers, not text: set "
                       f"dataset.{self.columns[col]}_column (or dataset.columns) to the column with the text")
        if not drop_empty:
            for col, (count, rows) in self.empty.items():
                if count:
                    out.append(f"column '{col}' (the {self.columns[col]} column) is empty in {count:,} of {self.rows:,} "
                               f"rows ({self._rows(rows, count)}; blank, or a missing-value marker such as NA or null, "
                               "which pandas reads as missing): fill them, or set dataset.drop_empty: true to drop "
                               "such rows")
        return out

    def raise_problems(self, drop_empty: bool) -> None:
        found = self.problems(drop_empty)
        if found:
            raise UserError(f"Dataset '{self.source}' cannot be trained on as it is (checked "
                            f"{'the whole file' if not self.fatal else 'up to the first fatal problem'}, {self.rows:,} "
                            "rows):\n  - " + "\n  - ".join(found) + "\nFix the file (or the spec) and run again.")

    # -- chunks of columns (Arrow) -----------------------------------------------------------------------------
    def arrow_batch(self, batch: Any, row_number: Any) -> None:
        """One pyarrow RecordBatch; ``row_number(i)`` is the user-facing number of the batch's row ``i``."""
        import pyarrow as pa
        import pyarrow.compute as pc

        any_empty = None
        for col in self.columns:
            arr = batch.column(batch.schema.get_field_index(col))
            typ = arr.type
            if pa.types.is_string(typ) or pa.types.is_large_string(typ):
                # blank or whitespace-only, without copying the strings (utf8_is_space is false on "")
                empty = pc.or_kleene(pc.or_kleene(pc.is_null(arr), pc.equal(pc.binary_length(arr), 0)),
                                     pc.utf8_is_space(arr))
                if col in self.numeric_only:
                    values = pc.filter(arr, pc.invert(pc.fill_null(empty, True)))
                    if len(values):
                        self.has_values.add(col)
                        if not pc.all(pc.match_substring_regex(values, NUMBER_RE)).as_py():
                            self.numeric_only.discard(col)
            else:
                empty = pc.is_null(arr)
                if pa.types.is_floating(typ):
                    empty = pc.or_kleene(empty, pc.is_nan(arr))
                if col in self.text_cols:
                    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ) \
                            or pa.types.is_decimal(typ):
                        if len(arr) - arr.null_count:
                            self.has_values.add(col)
                    else:
                        valid = pc.indices_nonzero(pc.invert(pc.fill_null(empty, True)))
                        if len(valid):
                            entry = self.not_text.setdefault(col, [0, [], str(typ)])
                            entry[0] += len(valid)
                            entry[1].extend(row_number(i) for i in valid[: LISTED - len(entry[1])].to_pylist())
                        self.numeric_only.discard(col)
            empty = pc.fill_null(empty, True)
            count = pc.sum(empty).as_py() or 0
            if count:
                entry = self.empty[col]
                entry[0] += count
                if len(entry[1]) < LISTED:
                    entry[1].extend(row_number(i) for i in pc.indices_nonzero(empty)[: LISTED - len(entry[1])].to_pylist())
            any_empty = empty if any_empty is None else pc.or_(any_empty, empty)
        if any_empty is not None:
            self.empty_rows += pc.sum(any_empty).as_py() or 0
        self.rows += batch.num_rows

    # -- one row of Python values (JSON, hub datasets) --------------------------------------------------------
    def record(self, row: Any, number: int) -> None:
        self.rows += 1
        any_empty = False
        for col in self.columns:
            value = row.get(col) if isinstance(row, dict) else None
            if value is None or (isinstance(value, float) and value != value) or \
                    (isinstance(value, str) and not value.strip()):
                entry = self.empty[col]
                entry[0] += 1
                if len(entry[1]) < LISTED:
                    entry[1].append(number)
                any_empty = True
                continue
            if col in self.text_cols:
                if isinstance(value, str):
                    self.numeric_only.discard(col)
                elif isinstance(value, (bool, int, float)):
                    self.has_values.add(col)
                else:
                    entry = self.not_text.setdefault(col, [0, [], type(value).__name__])
                    entry[0] += 1
                    if len(entry[1]) < LISTED:
                        entry[1].append(number)
                    self.numeric_only.discard(col)
        self.empty_rows += any_empty


def _skip_adjusted(skipped: list[int]) -> Any:
    """Map an index among the rows pyarrow kept to the data row number (1 = first row after the header)."""
    def number(index: int) -> int:
        row = index + 1
        for s in skipped:  # sorted data-row numbers of the skipped (ragged) rows
            if s <= row:
                row += 1
            else:
                break
        return row
    return number


def _first_bad_utf8(path: Path) -> tuple[int, int, bytes]:
    """(byte offset, line, the bytes there) of the first byte sequence that is not UTF-8."""
    offset, lines, carry = 0, 1, b""
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(CSV_BLOCK)
            data = carry + chunk
            if not data:
                break
            try:
                data.decode("utf-8")
                carry = b""
            except UnicodeDecodeError as exc:
                if chunk and exc.reason == "unexpected end of data" and exc.start >= len(data) - 3:
                    carry = data[exc.start:]
                    data = data[: exc.start]
                else:
                    return offset + exc.start, lines + data.count(b"\n", 0, exc.start), data[exc.start: exc.start + 4]
            lines += data.count(b"\n")
            offset += len(data)
            if not chunk:
                break
    return -1, -1, b""


def _scan_csv(path: Path, scan: DataScan, sep: str) -> None:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    ragged: list[tuple[int, int, int]] = []

    def on_invalid(row: Any) -> str:
        ragged.append((int(row.number or 0) - 1, row.expected_columns, row.actual_columns))
        return "skip"

    with path.open("rb") as fh:
        header = fh.readline()
    try:
        names = next(iter(__import__("csv").reader([header.decode("utf-8-sig")], delimiter=sep)), [])
    except UnicodeDecodeError:
        names = []
    types = {name: pa.string() for name in names}
    reader = None
    try:
        reader = pcsv.open_csv(
            path, read_options=pcsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK),
            parse_options=pcsv.ParseOptions(delimiter=sep, newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=True, null_values=list(PANDAS_NA)))
        seen = 0
        for batch in reader:
            done = sorted(r[0] for r in ragged)
            number = _skip_adjusted(done)
            scan.arrow_batch(batch, lambda i, base=seen, number=number: number(base + i))
            seen += batch.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        if "utf8" in str(exc).lower() or "utf-8" in str(exc).lower():
            offset, line, raw = _first_bad_utf8(path)
            scan.fatal = (f"undecodable bytes (not UTF-8) at byte offset {offset}, line {line} ({raw!r}): re-save "
                          "the file as UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT" if offset >= 0 else
                          f"it is not valid UTF-8 ({exc}): re-save the file as UTF-8")
        else:
            scan.fatal = f"it cannot be parsed as {'TSV' if sep == chr(9) else 'CSV'} after {scan.rows:,} rows: {exc}"
    finally:
        if reader is not None:
            reader.close()
    for row, expected, actual in ragged:
        scan.add_bad("ragged row", row, f"{actual} field{'s' if actual != 1 else ''} where the header has {expected}")
    if ragged:
        scan.bad["ragged row"][1].append((None, "quote fields that contain the delimiter, or fix the row"))


def _scan_jsonl(path: Path, scan: DataScan) -> None:
    import json

    with path.open("rb") as fh:
        offset = 0
        for lineno, raw in enumerate(fh, 1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                scan.add_bad("undecodable line", lineno, f"bytes {raw[exc.start: exc.start + 4]!r} at byte offset "
                             f"{start + exc.start} are not UTF-8 (re-save the file as UTF-8)")
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                scan.add_bad("malformed JSON line", lineno, f"{exc.msg} at column {exc.colno}" if hasattr(exc, "msg")
                             else str(exc))
                continue
            if not isinstance(row, dict):
                scan.add_bad("malformed JSON line", lineno, f"a JSON {type(row).__name__}, not an object")
                continue
            scan.record(row, lineno)


def _scan_parquet(path: Path, scan: DataScan) -> None:
    import pyarrow.parquet as pq

    try:
        seen = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=list(scan.columns)):
            scan.arrow_batch(batch, lambda i, base=seen: base + i + 1)
            seen += batch.num_rows
    except Exception as exc:  # noqa: BLE001 - a corrupt file is one user-facing problem
        scan.fatal = f"it cannot be read as parquet after {scan.rows:,} rows: {type(exc).__name__}: {exc}"


def scan_file(source: str, roles: dict[str, str], hub_config: str | None = None) -> DataScan:
    """One streaming pass over the whole dataset, checking the role columns of every row."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".csv", ".tsv"):
        scan = DataScan(source, roles, "data row")
        _scan_csv(path, scan, "\t" if suffix == ".tsv" else ",")
    elif path.is_file() and (suffix == ".jsonl" or (suffix == ".json" and _looks_jsonl(path))):
        scan = DataScan(source, roles, "line")
        _scan_jsonl(path, scan)
    elif path.is_file() and suffix == ".parquet":
        scan = DataScan(source, roles, "row")
        _scan_parquet(path, scan)
    else:  # a JSON array or a hub dataset: loaded whole, as the runner does
        frame = load_table(source, hub_config)
        scan = DataScan(source, roles, "row")
        cols = list(scan.columns)
        for number, values in enumerate(frame[cols].itertuples(index=False, name=None), 1):
            scan.record(dict(zip(cols, values)), number)
    return scan


def drop_empty_rows(frame: Any, roles: dict[str, str]) -> Any:
    """The rows whose role columns all hold a value (what dataset.drop_empty keeps)."""
    keep = None
    for col in roles.values():
        column = frame[col]
        ok = column.notna() & ~column.map(lambda v: isinstance(v, str) and not v.strip())
        keep = ok if keep is None else keep & ok
    return frame[keep].reset_index(drop=True) if keep is not None else frame
