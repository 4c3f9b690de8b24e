"""Read the day's sales file a partner shop's till exports: one row per sale with the round-up.

Shops send whatever their French till software writes, so this parser accepts the dialects
those tools produce and turns each row into a :class:`Sale` (amount in minor units, sale time
in UTC) or a :class:`RowProblem` that names the line as a spreadsheet shows it (header = 1).
A problem with the whole file (empty, unusable header, an encoding that breaks, a misplaced
control total) raises :class:`FileProblem`. It knows nothing of the database: bounds on
amounts and on dates are the import service's rules.

It streams: the file is read line by line (each line bounded), nothing is kept, so a file of a
million lines costs no more memory than one of ten. Quoted fields are read, but a quoted field
may not span lines.

Dialects:

- Delimiter ``;``, ``,`` or tab, whichever appears most often outside quotes in the header
  line (``;`` wins ties). An Excel ``sep=;`` first line is honoured.
- Encoding UTF-8, with or without BOM, or ISO-8859-15. Lines are decoded as UTF-8 until one
  fails; if no earlier line held a multi-byte UTF-8 character (so all were ASCII), the rest of
  the file is read as ISO-8859-15. A failure after UTF-8 was seen, or after a BOM, raises
  ``FileProblem(reason="encoding")``. ``encoding=`` forces one.
- LF or CRLF line endings; blank lines (or lines of empty cells) are skipped.
- Header names are matched case-insensitively, ignoring accents, spaces, ``_``, ``.``, ``-``
  and ``°``; unknown columns are ignored. Among several ticket (or currency) columns the name
  listed first in :data:`TICKET_COLUMNS` wins, so ``ticket`` beats a generic ``id``; two amount
  columns, or one name twice, are refused.
- The amount column's NAME decides the unit, never its values: names in
  :data:`MINOR_AMOUNT_COLUMNS` hold whole minor units (``35`` = 0.35 EUR, a decimal separator
  there is a row problem); names in :data:`MAJOR_AMOUNT_COLUMNS` hold major units with a
  decimal point or comma (``0,35``, ``2`` = 2 EUR, ``1 234,50``). A leading ``€`` or a trailing
  ``€`` or currency code on a value is tolerated.
- The sale time comes from, in this order: a column in :data:`TIMESTAMP_COLUMNS`; else a
  column in :data:`DATE_COLUMNS` with one in :data:`TIME_COLUMNS`; else a ``date`` or
  ``date_vente`` column holding both. ISO 8601 (with or without offset) and ``30/11/2026
  18:42[:05]`` are read, times also as ``18h42``. A time without offset is local time in
  ``timezone``; a local time that a DST change skips or repeats is read with ``fold=0``
  (the offset in force before the change).
- A row whose ticket cell is ``total`` (any case, optional ``:``) carries the control total,
  read with the file's amount unit into :attr:`TillFile.declared_total`; it must be the last row.
- Data rows may carry extra trailing empty cells (spreadsheets pad); fewer or more non-empty
  cells than the header is a ``columns`` problem.
"""

from __future__ import annotations

import codecs
import csv
import io
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import partial
from typing import BinaryIO
from zoneinfo import ZoneInfo

from campaigns.errors import CampaignError
from ledger.money import CURRENCY_EXPONENTS, MAX_AMOUNT, parse_major

TICKET_COLUMNS = ("ticket_id", "ticket", "n° ticket", "no_ticket", "numero_ticket", "numero", "numéro", "receipt", "id")
MINOR_AMOUNT_COLUMNS = (
    "amount",
    "amount_minor",
    "amount_cents",
    "cents",
    "centimes",
    "montant_centimes",
    "arrondi_centimes",
)
MAJOR_AMOUNT_COLUMNS = ("montant", "arrondi", "amount_major", "don", "roundup", "round_up", "montant_arrondi")
TIMESTAMP_COLUMNS = ("sold_at", "datetime", "horodatage", "date_heure", "timestamp")
DATE_COLUMNS = ("date", "date_vente", "jour")
TIME_COLUMNS = ("heure", "time", "heure_vente")
CURRENCY_COLUMNS = ("currency", "devise", "monnaie")

ENCODINGS = ("utf-8", "utf-8-sig", "iso-8859-15")
_ENCODING_NAMES = {"utf-8": "utf-8", "utf-8-sig": "utf-8-sig", "iso8859-15": "iso-8859-15"}  # codecs' name: ours
DELIMITERS = (";", ",", "\t")  # in this order: the first wins a tie
MAX_LINE_CHARS = 10_000
MAX_LINE_BYTES = 4 * MAX_LINE_CHARS + 2  # a UTF-8 character is at most 4 bytes, plus CRLF
MAX_COLUMNS = 64
MAX_TICKET_CHARS = 64
MAX_MINOR_DIGITS = 16  # MAX_AMOUNT has 16 digits: longer is out of range, and int() stays cheap
ECHO_CHARS = 40

_IGNORED_IN_NAMES = frozenset(" _.-°'\t\ufeff")


def _key(name: str) -> str:
    """A header name folded for matching: lower case, no accents, no separators."""
    folded = unicodedata.normalize("NFKD", name.strip().lower())
    return "".join(c for c in folded if c not in _IGNORED_IN_NAMES and not unicodedata.combining(c))


def _keys(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_key(n) for n in names))


_TICKET_KEYS = _keys(TICKET_COLUMNS)
_MINOR_KEYS = _keys(MINOR_AMOUNT_COLUMNS)
_MAJOR_KEYS = _keys(MAJOR_AMOUNT_COLUMNS)
_TIMESTAMP_KEYS = _keys(TIMESTAMP_COLUMNS)
_DATE_KEYS = _keys(DATE_COLUMNS)
_TIME_KEYS = _keys(TIME_COLUMNS)
_DATE_HOLDING_TIME_KEYS = _keys(("date", "date_vente"))
_CURRENCY_KEYS = _keys(CURRENCY_COLUMNS)
_AMOUNT_KEYS = frozenset(_MINOR_KEYS + _MAJOR_KEYS)
_KNOWN_KEYS = frozenset(
    _TICKET_KEYS + _MINOR_KEYS + _MAJOR_KEYS + _TIMESTAMP_KEYS + _DATE_KEYS + _TIME_KEYS + _CURRENCY_KEYS
)


@dataclass(frozen=True, slots=True)
class Sale:
    """One sale's round-up: ``amount`` in minor units of ``currency``, ``sold_at`` in UTC."""

    line: int
    ticket_id: str
    amount: int
    currency: str
    sold_at: datetime


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row that is not a sale. ``reason`` is one of "ticket", "amount", "currency", "sold_at",
    "columns"; ``field`` is the column's name as the file's header writes it."""

    line: int
    field: str | None
    reason: str
    message: str


class FileProblem(CampaignError):
    """The file cannot be read as a till export: "empty", "header", "columns" (too many), "encoding"
    (a line that is neither UTF-8 nor, after UTF-8 was seen, anything else), "control_total"
    (a malformed total row, or rows after it)."""

    code = "invalid-file"

    def __init__(self, message: str, *, reason: str, line: int | None = None, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.reason = reason
        self.line = line


class _Bad(Exception):
    """A cell that does not hold what its column needs; becomes a RowProblem."""

    def __init__(self, field: str | None, reason: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason
        self.message = message


def _shown(value: str) -> str:
    """``value`` quoted for a message, cut to ECHO_CHARS characters."""
    return repr(value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "...")


# --------------------------------------------------------------------------- lines and encoding


class _Lines:
    """The stream's physical lines, decoded by the streaming encoding rule, each bounded.

    Yields ``(line number, text)``; text is ``None`` for a line longer than MAX_LINE_BYTES,
    which is skipped without being held in memory.
    """

    def __init__(self, stream: BinaryIO, forced: str | None) -> None:
        self._readline = stream.readline
        self.encoding = forced or "utf-8"
        self._codec = "utf-8" if self.encoding == "utf-8-sig" else self.encoding
        self._may_switch = forced is None
        self._seen_utf8 = False
        self.number = 0

    def __iter__(self) -> Iterator[tuple[int, str | None]]:
        readline, limit = self._readline, MAX_LINE_BYTES
        raw = self._first_line(readline(limit))
        while raw:
            self.number += 1
            if len(raw) == limit and raw[-1:] != b"\n":
                self._skip_rest_of_line()
                yield self.number, None
            else:
                yield self.number, self._decode(raw)
            raw = readline(limit)

    def _first_line(self, raw: bytes) -> bytes:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise FileProblem("the file is in UTF-16: export it as UTF-8 or ISO-8859-15", reason="encoding", line=1)
        if raw.startswith(codecs.BOM_UTF8) and self._codec == "utf-8":
            self.encoding, self._may_switch = "utf-8-sig", False
            return raw[len(codecs.BOM_UTF8) :]
        return raw

    def _skip_rest_of_line(self) -> None:
        chunk = self._readline(MAX_LINE_BYTES)
        while chunk and chunk[-1:] != b"\n":
            chunk = self._readline(MAX_LINE_BYTES)

    def _decode(self, raw: bytes) -> str:
        if self._codec != "utf-8":
            return raw.decode(self._codec)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._switch(raw)
        if not self._seen_utf8 and not raw.isascii():
            self._seen_utf8 = True
        return text

    def _switch(self, raw: bytes) -> str:
        if not self._may_switch or self._seen_utf8:
            raise FileProblem(
                f"line {self.number} is not valid {self.encoding} although earlier lines are: the file mixes encodings",
                reason="encoding",
                line=self.number,
            )
        self.encoding = self._codec = "iso-8859-15"
        return raw.decode(self._codec)


# --------------------------------------------------------------------------- header


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each value sits in a row, decided once from the header."""

    names: tuple[str, ...]
    ticket: int
    amount: int
    unit: str
    sold_at: int
    time: int | None
    currency: int | None


def _sniff(line: str) -> str:
    """The delimiter found most often outside quotes; ``;`` wins ties."""
    outside = "".join(line.split('"')[::2])
    return max(DELIMITERS, key=outside.count)


def _split(line: str, delimiter: str) -> list[str] | None:
    """The cells of one line; ``None`` when its quotes are unbalanced."""
    if '"' not in line:
        return line.split(delimiter)
    try:
        return next(csv.reader((line,), delimiter=delimiter, strict=True, skipinitialspace=True))
    except csv.Error:
        return None


def _header_problem(missing: str, line: int) -> FileProblem:
    accepted = (
        f"ticket: {', '.join(TICKET_COLUMNS)}; amount in cents: {', '.join(MINOR_AMOUNT_COLUMNS)}; "
        f"amount in units: {', '.join(MAJOR_AMOUNT_COLUMNS)}; sale time: {', '.join(TIMESTAMP_COLUMNS)}, "
        f"or a date ({', '.join(DATE_COLUMNS)}) with a time ({', '.join(TIME_COLUMNS)})"
    )
    return FileProblem(f"the header {missing}. Accepted columns are {accepted}", reason="header", line=line)


def _pick(keys: list[str], wanted: tuple[str, ...]) -> int | None:
    """Index of the column whose name comes first in ``wanted``."""
    for name in wanted:
        if name in keys:
            return keys.index(name)
    return None


def _sold_at_columns(keys: list[str]) -> tuple[int | None, int | None]:
    stamp = _pick(keys, _TIMESTAMP_KEYS)
    if stamp is not None:
        return stamp, None
    day, clock = _pick(keys, _DATE_KEYS), _pick(keys, _TIME_KEYS)
    if day is not None and clock is not None:
        return day, clock
    return _pick(keys, _DATE_HOLDING_TIME_KEYS), None


def _amount_column(keys: list[str], line: int) -> tuple[int, str]:
    found = [(i, "minor" if k in _MINOR_KEYS else "major") for i, k in enumerate(keys) if k in _AMOUNT_KEYS]
    if len(found) != 1:
        raise _header_problem("has no amount column" if not found else "names two amount columns", line)
    return found[0]


def _layout(names: list[str], line: int) -> _Layout:
    if len(names) > MAX_COLUMNS:
        raise FileProblem(f"the header has {len(names)} columns, at most {MAX_COLUMNS}", reason="columns", line=line)
    keys = [_key(n) for n in names]
    known = [k for k in keys if k in _KNOWN_KEYS]
    if len(set(known)) != len(known):
        raise _header_problem("names the same column twice", line)
    ticket, (amount, unit) = _pick(keys, _TICKET_KEYS), _amount_column(keys, line)
    sold_at, clock = _sold_at_columns(keys)
    if ticket is None:
        raise _header_problem("has no ticket column", line)
    if sold_at is None:
        raise _header_problem("has no sale time column", line)
    clean = tuple(n.strip() for n in names)
    return _Layout(clean, ticket, amount, unit, sold_at, clock, _pick(keys, _CURRENCY_KEYS))


# --------------------------------------------------------------------------- cells


def _is_total(ticket: str) -> bool:
    return ticket.lower().rstrip(": ") == "total"


def _ticket(cell: str, field: str) -> str:
    ticket = cell.strip()
    if ticket and len(ticket) <= MAX_TICKET_CHARS and ticket.isprintable():
        return ticket
    if not ticket:
        raise _Bad(field, "ticket", "the ticket number is missing")
    if len(ticket) > MAX_TICKET_CHARS:
        raise _Bad(field, "ticket", f"the ticket number {_shown(ticket)} is longer than {MAX_TICKET_CHARS} characters")
    raise _Bad(field, "ticket", f"the ticket number {_shown(ticket)} contains control or invisible characters")


def _without_symbol(text: str, currency: str, field: str) -> str:
    """``text`` without a leading ``€`` or a trailing ``€`` or currency code."""
    if text[:1] == "€" or text[-1:] == "€":
        if currency != "EUR":
            raise _Bad(field, "currency", f"the amount {_shown(text)} is in EUR, not {currency}")
        return text.strip("€").strip()
    code = text[-3:].upper()
    if code == currency:
        return text[:-3].rstrip()
    if code in CURRENCY_EXPONENTS:
        raise _Bad(field, "currency", f"the amount {_shown(text)} is in {code}, not {currency}")
    return text


def _minor_amount(cell: str, currency: str, field: str) -> int:
    """A whole number of minor units (zero allowed here: the caller decides)."""
    text = cell.strip()
    if not (text.isascii() and text.isdigit()):
        text = _without_symbol(text, currency, field)
        if not (text.isascii() and text.isdigit()):
            raise _Bad(field, "amount", _minor_complaint(text, field))
    if len(text) > MAX_MINOR_DIGITS or int(text) > MAX_AMOUNT:
        raise _Bad(field, "amount", f"the amount {_shown(text)} is out of range")
    return int(text)


def _minor_complaint(text: str, field: str) -> str:
    if not text:
        return "the amount is missing"
    if text[0] == "-" and text[1:].isdigit():
        return f"the amount {_shown(text)} is negative"
    if "," in text or "." in text:
        return f"the amount {_shown(text)} has decimals, but column {_shown(field)} holds whole cents"
    return f"the amount {_shown(text)} is not a whole number of cents"


def _major_amount(cell: str, currency: str, field: str) -> int:
    """An amount in major units, into minor units, never rounded."""
    text = cell.strip()
    if not text[-1:].isdigit() or not text[:1].isdigit():
        text = _without_symbol(text, currency, field)
    separator = max(text.rfind(","), text.rfind("."))
    if separator >= 0 and len(text) - separator - 1 > CURRENCY_EXPONENTS[currency]:
        raise _Bad(field, "amount", f"the amount {_shown(text)} has more decimals than {currency} has")
    try:
        return parse_major(text, currency)
    except ValueError:
        complaint = f"the amount {_shown(text)} is not an amount" if text else "the amount is missing"
        raise _Bad(field, "amount", complaint) from None


def _check_currency(cell: str, currency: str, field: str) -> None:
    value = cell.strip()
    if value == currency or value.upper() == currency or (value == "€" and currency == "EUR"):
        return
    raise _Bad(field, "currency", f"the currency {_shown(value)} is not {currency}")


# --------------------------------------------------------------------------- dates and times


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` alone also takes other scripts' digits)."""
    return text.isascii() and text.isdigit()


def _date(text: str) -> date:
    """``2026-11-30`` or ``30/11/2026`` (day and month may have one digit)."""
    if len(text) == 10:
        if text[4] == "-" and text[7] == "-":
            return date.fromisoformat(text)
        if text[2] == "/" and text[5] == "/" and _digits(text[:2] + text[3:5] + text[6:]):
            return date(int(text[6:]), int(text[3:5]), int(text[:2]))
    parts = text.split("/")
    if len(parts) != 3 or len(parts[2]) != 4 or not all(_digits(p) for p in parts):
        raise ValueError(text)
    return date(int(parts[2]), int(parts[1]), int(parts[0]))


def _time(text: str) -> time:
    """``18:42``, ``18:42:05``, ``18h42`` or ``18H42`` (the hour may have one digit)."""
    if len(text) == 5 and text[2] in ":hH" and _digits(text[:2] + text[3:]):
        return time(int(text[:2]), int(text[3:]))
    parts = text.replace("h", ":").replace("H", ":").split(":")
    if not 2 <= len(parts) <= 3 or not all(1 <= len(p) <= 2 and _digits(p) for p in parts):
        raise ValueError(text)
    return time(*(int(p) for p in parts))


def _timestamp(text: str) -> datetime:
    """A date and time in one cell: ISO 8601 first (the common case), then ``date time``."""
    if len(text) >= 16 and text[4] == "-" and text[10] in "T ":
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    day, _, clock = text.partition(" ")
    return datetime.combine(_date(day), _time(clock.strip()))


def _in_utc(moment: datetime, zone: ZoneInfo) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


class _OneCellTime:
    """The sale time read from one cell holding date and time."""

    def __init__(self, layout: _Layout, zone: ZoneInfo) -> None:
        self._column, self._field, self._zone = layout.sold_at, layout.names[layout.sold_at], zone

    def __call__(self, cells: list[str]) -> datetime:
        text = cells[self._column].strip()
        try:
            return _in_utc(_timestamp(text), self._zone)
        except (ValueError, OverflowError):
            raise _Bad(self._field, "sold_at", f"the sale time {_shown(text)} is not a date and time") from None


class _TwoCellTime:
    """The sale time read from a date cell and a time cell."""

    def __init__(self, layout: _Layout, time_column: int, zone: ZoneInfo) -> None:
        self._day, self._clock, self._zone = layout.sold_at, time_column, zone
        self._day_field, self._clock_field = layout.names[layout.sold_at], layout.names[time_column]

    def __call__(self, cells: list[str]) -> datetime:
        day_text, clock_text = cells[self._day].strip(), cells[self._clock].strip()
        try:
            day = _date(day_text)
        except ValueError:
            raise _Bad(self._day_field, "sold_at", f"the date {_shown(day_text)} is not a date") from None
        try:
            return _in_utc(datetime.combine(day, _time(clock_text)), self._zone)
        except (ValueError, OverflowError):
            raise _Bad(self._clock_field, "sold_at", f"the time {_shown(clock_text)} is not a time") from None


# --------------------------------------------------------------------------- the file

_NumberedLines = Iterator[tuple[int, str | None]]


class TillFile:
    """The rows of one till file, read as they are iterated (once, from the stream).

    ``encoding`` may change from "utf-8" to "iso-8859-15" while iterating and
    ``declared_total`` is known once the total row is read: read both after the loop.
    """

    def __init__(
        self, lines: _Lines, rest: _NumberedLines, delimiter: str, layout: _Layout, currency: str, zone: ZoneInfo
    ) -> None:
        self.delimiter = delimiter
        self.amount_unit = layout.unit
        self.currency = currency
        self.declared_total: int | None = None
        self._lines = lines
        self._layout = layout
        self._amount: Callable[..., int] = partial(
            _minor_amount if layout.unit == "minor" else _major_amount, currency=currency
        )
        self._sold_at: Callable[[list[str]], datetime] = (
            _OneCellTime(layout, zone) if layout.time is None else _TwoCellTime(layout, layout.time, zone)
        )
        self._total_line: int | None = None
        self._items = self._read(rest)

    @property
    def encoding(self) -> str:
        """The encoding read so far ("utf-8", "utf-8-sig" or "iso-8859-15"): final after the loop."""
        return self._lines.encoding

    def __iter__(self) -> Iterator[Sale | RowProblem]:
        return self._items

    def __next__(self) -> Sale | RowProblem:
        return next(self._items)

    def _read(self, lines: _NumberedLines) -> Iterator[Sale | RowProblem]:
        blank = self.delimiter + ' \t"\r\n'
        for number, text in lines:
            if text is not None and not text.strip(blank):
                continue
            if self._total_line is not None:
                raise FileProblem(
                    f"line {number} follows the total on line {self._total_line}: the total must be the last row",
                    reason="control_total",
                    line=number,
                )
            item = self._item(number, text)
            if item is not None:
                yield item

    def _item(self, number: int, text: str | None) -> Sale | RowProblem | None:
        line = text.rstrip("\r\n") if text is not None else None
        if line is None or len(line) > MAX_LINE_CHARS:
            return RowProblem(number, None, "columns", f"the line is longer than {MAX_LINE_CHARS} characters")
        cells = _split(line, self.delimiter)
        if cells is None:
            return RowProblem(number, None, "columns", "the line has an unclosed or misplaced quote")
        layout = self._layout
        if len(cells) > layout.ticket and _is_total(cells[layout.ticket].strip()):
            self._read_total(number, cells)
            return None
        if len(cells) != len(layout.names) and not self._padded(cells):
            message = f"the row has {len(cells)} cells where the header has {len(layout.names)}"
            return RowProblem(number, None, "columns", message)
        try:
            return self._sale(number, cells)
        except _Bad as bad:
            return RowProblem(number, bad.field, bad.reason, bad.message)

    def _padded(self, cells: list[str]) -> bool:
        """True for a row longer than the header only by empty cells."""
        width = len(self._layout.names)
        return len(cells) > width and not "".join(cells[width:]).strip()

    def _sale(self, number: int, cells: list[str]) -> Sale:
        layout = self._layout
        names = layout.names
        ticket = _ticket(cells[layout.ticket], names[layout.ticket])
        amount = self._amount(cells[layout.amount], field=names[layout.amount])
        if amount <= 0:
            shown = _shown(cells[layout.amount].strip())
            raise _Bad(names[layout.amount], "amount", f"the amount {shown} is not more than zero")
        if layout.currency is not None:
            _check_currency(cells[layout.currency], self.currency, names[layout.currency])
        return Sale(number, ticket, amount, self.currency, self._sold_at(cells))

    def _read_total(self, number: int, cells: list[str]) -> None:
        column = self._layout.amount
        field = self._layout.names[column]
        text = cells[column].strip() if column < len(cells) else ""
        try:
            total = self._amount(text, field=field)
        except _Bad:
            total = -1
        if total < 0:
            raise FileProblem(
                f"the control total {_shown(text)} on line {number} is not an amount in column {_shown(field)}",
                reason="control_total",
                line=number,
                field=field,
            )
        self.declared_total, self._total_line = total, number


# --------------------------------------------------------------------------- entry point


def _forced_encoding(encoding: str | None) -> str | None:
    if encoding is None:
        return None
    try:
        name = _ENCODING_NAMES.get(codecs.lookup(encoding).name)
    except LookupError:
        name = None
    if name is None:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    return name


def _first_non_blank(lines: _NumberedLines) -> tuple[int, str]:
    for number, text in lines:
        line = text.rstrip("\r\n") if text is not None else None
        if line is None or len(line) > MAX_LINE_CHARS:
            raise FileProblem(f"the header is longer than {MAX_LINE_CHARS} characters", reason="header", line=number)
        if line.strip():
            return number, line
    raise FileProblem("the file is empty", reason="empty")


def _header(lines: _NumberedLines) -> tuple[str, list[str], int]:
    """Delimiter, column names and line number of the header; an Excel ``sep=;`` line is honoured."""
    number, line = _first_non_blank(lines)
    if line[:4].lower() == "sep=" and line[4:] in DELIMITERS:
        delimiter = line[4:]
        number, line = _first_non_blank(lines)
    else:
        delimiter = _sniff(line)
    names = _split(line, delimiter)
    if names is None:
        raise FileProblem("the header has an unclosed or misplaced quote", reason="header", line=number)
    return delimiter, names, number


def read_sales(
    stream: BinaryIO | io.RawIOBase,
    *,
    currency: str = "EUR",
    timezone: str = "Europe/Paris",
    encoding: str | None = None,
) -> TillFile:
    """Start reading a till export from a binary stream; iterate the result for its rows.

    Reads the header at once, so a file without a usable header raises :class:`FileProblem`
    here; later rows come as :class:`Sale` or :class:`RowProblem` while iterating, which may
    also raise :class:`FileProblem` (encoding break, misplaced total). The caller owns the stream.
    """
    if currency not in CURRENCY_EXPONENTS:
        raise ValueError(f"unknown currency {currency!r}")
    zone = ZoneInfo(timezone)
    readable = io.BufferedReader(stream) if isinstance(stream, io.RawIOBase) else stream
    lines = _Lines(readable, _forced_encoding(encoding))
    numbered = iter(lines)
    delimiter, names, number = _header(numbered)
    return TillFile(lines, numbered, delimiter, _layout(names, number), currency, zone)
