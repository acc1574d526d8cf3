"""The whole-file data scan: everything that would stop a run on its data, found before a run dir exists.

One streaming pass over each file finds undecodable bytes, malformed JSONL lines, ragged CSV rows, empty
texts and labels, and text columns that hold no text. It reads in bounded chunks (pyarrow's single-threaded
CSV reader is the fastest on a shared 2-core machine and numbers rows exactly), so RAM stays flat on large
files. :class:`DataScan` collects what a pass found and turns it into one UserError that names the file, the
column and the rows; the ``scan_*`` functions feed it from CSV/TSV, JSONL, parquet or a loaded DataFrame.
:func:`runners.data.scan_file` picks the reader for a dataset, and :func:`runners.data.preflight` runs it.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from runners.errors import UserError

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


def _skip_adjusted(skipped: list[int]) -> Callable[[int], int]:
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


def scan_csv(path: Path, scan: DataScan, sep: str) -> None:
    """A CSV (``sep=","``) or TSV file, in bounded blocks; ragged rows are skipped and reported."""
    import csv

    import pyarrow as pa
    import pyarrow.csv as pcsv

    ragged: list[tuple[int, int, int]] = []

    def on_invalid(row: Any) -> str:
        ragged.append((int(row.number or 0) - 1, row.expected_columns, row.actual_columns))
        return "skip"

    with path.open("rb") as fh:
        header = fh.readline()
    try:
        names: list[str] = next(iter(csv.reader([header.decode("utf-8-sig")], delimiter=sep)), [])
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


def scan_jsonl(path: Path, scan: DataScan) -> None:
    """A JSON Lines file, line by line: undecodable and malformed lines are reported with their numbers."""
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
                scan.add_bad("malformed JSON line", lineno, f"{exc.msg} at column {exc.colno}"
                             if isinstance(exc, json.JSONDecodeError) else str(exc))
                continue
            if not isinstance(row, dict):
                scan.add_bad("malformed JSON line", lineno, f"a JSON {type(row).__name__}, not an object")
                continue
            scan.record(row, lineno)


def scan_parquet(path: Path, scan: DataScan) -> None:
    """A parquet file, in record batches of the role columns only."""
    import pyarrow.parquet as pq

    try:
        seen = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=list(scan.columns)):
            scan.arrow_batch(batch, lambda i, base=seen: base + i + 1)
            seen += batch.num_rows
    except Exception as exc:  # noqa: BLE001 - a corrupt file is one user-facing problem
        scan.fatal = f"it cannot be read as parquet after {scan.rows:,} rows: {type(exc).__name__}: {exc}"


def scan_frame(frame: Any, scan: DataScan) -> None:
    """Every row of a DataFrame loaded whole (a JSON array, a hub dataset), as the runner loads it."""
    cols = list(scan.columns)
    for number, values in enumerate(frame[cols].itertuples(index=False, name=None), 1):
        scan.record(dict(zip(cols, values)), number)
