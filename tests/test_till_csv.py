"""The till export parser reads every dialect French tills write, names each bad row by the line a
spreadsheet shows, refuses unusable files as a whole, and streams: memory does not grow with the
file. Pure tests, no database."""

from __future__ import annotations

import csv
import io
import string
import tracemalloc
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from campaigns.errors import CampaignError
from campaigns.till_csv import (
    DATE_COLUMNS,
    MAJOR_AMOUNT_COLUMNS,
    MINOR_AMOUNT_COLUMNS,
    TICKET_COLUMNS,
    TIME_COLUMNS,
    TIMESTAMP_COLUMNS,
    FileProblem,
    RowProblem,
    Sale,
    TillFile,
    read_sales,
)

PARIS = ZoneInfo("Europe/Paris")


def till(text: str, encoding: str = "utf-8", **options: str) -> TillFile:
    return read_sales(io.BytesIO(text.encode(encoding)), **options)


def items(text: str, encoding: str = "utf-8", **options: str) -> list[Sale | RowProblem]:
    return list(till(text, encoding, **options))


def only(text: str, **options: str) -> Sale | RowProblem:
    (item,) = items(text, **options)
    return item


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def problem_of(header: str, row: str) -> RowProblem:
    item = only(f"{header}\n{row}\n")
    assert isinstance(item, RowProblem), item
    return item


def file_problem(data: bytes, **options: str) -> FileProblem:
    with pytest.raises(FileProblem) as caught:
        list(read_sales(io.BytesIO(data), **options))
    return caught.value


# --------------------------------------------------------------------------- dialects

FRENCH_FILE = "N° ticket;Montant;Date;Heure\n0001;0,35;30/11/2026;18h42\n0002;1,65;30/11/2026;18:43\n"


def test_a_french_semicolon_export_yields_sales_in_cents_and_utc() -> None:
    result = till(FRENCH_FILE)
    assert list(result) == [
        Sale(2, "0001", 35, "EUR", utc(2026, 11, 30, 17, 42)),
        Sale(3, "0002", 165, "EUR", utc(2026, 11, 30, 17, 43)),
    ]
    assert (result.delimiter, result.amount_unit, result.encoding) == (";", "major", "utf-8")


def test_a_comma_file_reads_quoted_decimal_commas() -> None:
    result = till('ticket,montant,sold_at\nA1,"0,35",2026-11-30T17:42:00Z\nA2,0.20,2026-11-30T17:43:00Z\n')
    assert [(s.ticket_id, s.amount) for s in result] == [("A1", 35), ("A2", 20)]
    assert result.delimiter == ","


def test_a_tab_file_is_read() -> None:
    result = till("ticket_id\tamount_cents\tsold_at\nT1\t35\t2026-11-30 18:42\n")
    assert list(result) == [Sale(2, "T1", 35, "EUR", utc(2026, 11, 30, 17, 42))]
    assert (result.delimiter, result.amount_unit) == ("\t", "minor")


def test_semicolon_wins_a_tie_with_commas_in_the_header() -> None:
    result = till("ticket;cents;sold_at;x,y,z,w\nT1;35;2026-11-30 18:42;a,b,c,d\n")
    assert result.delimiter == ";"
    assert [s.amount for s in result] == [35]


def test_delimiters_inside_quotes_do_not_count_when_sniffing() -> None:
    result = till('ticket,cents,sold_at,"a;b;c;d"\nT1,35,2026-11-30 18:42,x\n')
    assert result.delimiter == ","
    assert len(list(result)) == 1


def test_an_excel_sep_line_sets_the_delimiter_and_the_header_follows() -> None:
    result = till("sep=,\nticket,cents,sold_at,x;y;z;w\nT1,35,2026-11-30 18:42,1;2;3;4\n")
    assert result.delimiter == ","
    assert [s.line for s in result] == [3]


def test_a_quoted_ticket_keeps_its_delimiters_and_escaped_quotes() -> None:
    sale = only('ticket;cents;sold_at\n"A;1 ""bis""";35;2026-11-30 18:42\n')
    assert isinstance(sale, Sale) and sale.ticket_id == 'A;1 "bis"'


def test_utf8_with_a_bom_is_reported_as_utf8_sig() -> None:
    result = read_sales(io.BytesIO(FRENCH_FILE.encode("utf-8-sig")))
    assert len(list(result)) == 2
    assert result.encoding == "utf-8-sig"


def test_a_latin9_file_with_euro_signs_and_accents_is_read() -> None:
    text = "Numéro;Montant;Date;Heure\nCafé-1;0,35 €;30/11/2026;18h42\n"
    assert text.encode("iso-8859-15").count(b"\xa4") == 1
    result = till(text, "iso-8859-15")
    assert list(result) == [Sale(2, "Café-1", 35, "EUR", utc(2026, 11, 30, 17, 42))]
    assert result.encoding == "iso-8859-15"


def test_an_ascii_start_then_a_latin9_line_switches_encoding_for_the_rest() -> None:
    text = "ticket;montant;sold_at\nT1;0,35;2026-11-30 18:42\nT2;0,20 €;2026-11-30 18:43\nÉté;0,10;2026-11-30 18:44\n"
    result = till(text, "iso-8859-15")
    assert [s.ticket_id for s in result] == ["T1", "T2", "Été"]
    assert result.encoding == "iso-8859-15"


def test_a_line_that_breaks_utf8_after_utf8_was_seen_stops_the_file() -> None:
    utf8 = "ticket;montant;sold_at\nÉté;0,35;2026-11-30 18:42\n".encode()
    data = utf8 + "T2;0,20 €;2026-11-30 18:43\n".encode("iso-8859-15")
    result = read_sales(io.BytesIO(data))
    assert next(result).ticket_id == "Été"
    with pytest.raises(FileProblem) as caught:
        next(result)
    assert (caught.value.reason, caught.value.line) == ("encoding", 3)


def test_a_bom_means_utf8_for_sure_so_latin9_bytes_stop_the_file() -> None:
    data = b"\xef\xbb\xbfticket;montant;sold_at\nT1;0,35 \xa4;2026-11-30 18:42\n"
    problem = file_problem(data)
    assert (problem.reason, problem.line) == ("encoding", 2)


def test_a_forced_encoding_is_used_from_the_first_line() -> None:
    data = "ticket;montant;sold_at\nÃ©;0,35;2026-11-30 18:42\n".encode("iso-8859-15")
    assert [s.ticket_id for s in read_sales(io.BytesIO(data))] == ["é"]
    forced = read_sales(io.BytesIO(data), encoding="latin9")
    assert [s.ticket_id for s in forced] == ["Ã©"]
    assert forced.encoding == "iso-8859-15"


def test_a_forced_utf8_refuses_latin9_bytes() -> None:
    problem = file_problem(b"ticket;montant;sold_at\nT1;0,35 \xa4;2026-11-30 18:42\n", encoding="utf-8")
    assert (problem.reason, problem.line) == ("encoding", 2)


def test_a_utf16_file_is_refused_as_a_whole() -> None:
    problem = file_problem("ticket;cents;sold_at\n".encode("utf-16"))
    assert (problem.reason, problem.line) == ("encoding", 1)


def test_crlf_endings_blank_lines_and_a_last_line_without_newline_are_read() -> None:
    text = "ticket;cents;sold_at\r\n\r\nT1;35;2026-11-30 18:42\r\n;;\r\n   \r\nT2;20;2026-11-30 18:43"
    assert [(s.line, s.ticket_id, s.amount) for s in items(text)] == [(3, "T1", 35), (6, "T2", 20)]


def test_the_line_number_counts_blank_lines_before_the_header() -> None:
    problem = problem_of("\n\nticket;cents;sold_at", "T1;x;2026-11-30 18:42")
    assert problem.line == 4


# --------------------------------------------------------------------------- header


@pytest.mark.parametrize(
    ("header", "unit"),
    [
        ("N° Ticket;Arrondi;Date Vente;Heure_Vente", "major"),
        ("NUMÉRO;ARRONDI CENTIMES;JOUR;TIME", "minor"),
        ("No.Ticket;Round-Up;Horodatage", "major"),
        ("receipt;Amount;Timestamp", "minor"),
        ("Id;Don;Date", "major"),
        ("numero_ticket;montant_arrondi;date_heure", "major"),
    ],
)
def test_header_names_match_ignoring_case_accents_and_separators(header: str, unit: str) -> None:
    cells = ["T1", "35" if unit == "minor" else "0,35"]
    cells += ["30/11/2026", "18:42"] if header.count(";") == 3 else ["30/11/2026 18:42"]
    result = till(f"{header}\n{';'.join(cells)}\n")
    assert list(result) == [Sale(2, "T1", 35, "EUR", utc(2026, 11, 30, 17, 42))]
    assert result.amount_unit == unit


def test_unknown_columns_are_ignored() -> None:
    sale = only("caisse;ticket;vendeur;cents;sold_at;remarque\n3;T1;Léa;35;2026-11-30 18:42;ras\n")
    assert isinstance(sale, Sale) and (sale.ticket_id, sale.amount) == ("T1", 35)


def test_a_ticket_column_is_preferred_to_a_generic_id_column() -> None:
    sale = only("id;ticket;cents;sold_at\n981;T1;35;2026-11-30 18:42\n")
    assert isinstance(sale, Sale) and sale.ticket_id == "T1"


def test_a_timestamp_column_is_preferred_to_a_date_and_time_pair() -> None:
    sale = only("ticket;cents;date;heure;sold_at\nT1;35;01/01/2020;00:00;2026-11-30 18:42\n")
    assert isinstance(sale, Sale) and sale.sold_at == utc(2026, 11, 30, 17, 42)


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ("montant;sold_at", "ticket"),
        ("ticket;sold_at", "amount"),
        ("ticket;montant", "sale time"),
        ("ticket;montant;heure", "sale time"),
        ("ticket;montant;jour", "sale time"),
    ],
)
def test_a_header_without_a_required_column_is_refused_listing_accepted_names(header: str, missing: str) -> None:
    problem = file_problem(f"{header}\nT1;0,35;2026-11-30 18:42\n".encode())
    assert (problem.reason, problem.line, problem.code) == ("header", 1, "invalid-file")
    assert f"has no {missing} column" in problem.message
    for names in (TICKET_COLUMNS, MINOR_AMOUNT_COLUMNS, MAJOR_AMOUNT_COLUMNS, TIMESTAMP_COLUMNS, TIME_COLUMNS):
        assert all(name in problem.message for name in names)
    assert all(name in problem.message for name in DATE_COLUMNS)


def test_a_header_with_two_amount_columns_is_refused() -> None:
    problem = file_problem(b"ticket;montant;cents;sold_at\n")
    assert (problem.reason, problem.line) == ("header", 1)
    assert "two amount columns" in problem.message


def test_a_header_naming_a_column_twice_is_refused() -> None:
    problem = file_problem(b"ticket;Ticket;cents;sold_at\n")
    assert problem.reason == "header"


def test_a_header_after_blank_lines_is_refused_with_its_own_line() -> None:
    assert file_problem(b"\n\nticket;sold_at\n").line == 3


def test_a_header_with_more_than_64_columns_is_refused() -> None:
    header = ";".join(["ticket", "cents", "sold_at", *(f"x{i}" for i in range(62))])
    problem = file_problem(header.encode())
    assert (problem.reason, problem.line) == ("columns", 1)


@pytest.mark.parametrize("data", [b"", b"\n\r\n  \n"])
def test_an_empty_file_is_refused_when_reading_starts(data: bytes) -> None:
    with pytest.raises(FileProblem) as caught:
        read_sales(io.BytesIO(data))
    assert caught.value.reason == "empty"
    assert isinstance(caught.value, CampaignError)


def test_header_problems_are_raised_by_read_sales_before_iteration() -> None:
    with pytest.raises(FileProblem):
        read_sales(io.BytesIO(b"foo;bar\nT1;1\n"))


def test_a_header_only_file_has_no_rows() -> None:
    result = till("ticket;cents;sold_at\n")
    assert list(result) == []
    assert result.declared_total is None


# --------------------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    ("value", "amount"),
    [
        ("0,35", 35),
        ("0.35", 35),
        ("2", 200),
        ("0,3", 30),
        ("1 234,50", 123450),
        ("1\u00a0234,50", 123450),
        ("€0,35", 35),
        ("0,35 €", 35),
        ("0,35€", 35),
        ("0,35 EUR", 35),
        ("0.35eur", 35),
    ],
)
def test_major_unit_amounts_become_cents(value: str, amount: int) -> None:
    sale = only(f"ticket;montant;sold_at\nT1;{value};2026-11-30 18:42\n")
    assert isinstance(sale, Sale) and sale.amount == amount


@pytest.mark.parametrize(("value", "amount"), [("35", 35), ("0035", 35), ("200", 200), ("35 €", 35), ("35EUR", 35)])
def test_minor_unit_amounts_are_whole_cents(value: str, amount: int) -> None:
    sale = only(f"ticket;centimes;sold_at\nT1;{value};2026-11-30 18:42\n")
    assert isinstance(sale, Sale) and sale.amount == amount


@pytest.mark.parametrize(
    "value", ["", "abc", "0", "0,00", "-0,35", "0,355", "0,350", "1e3", "1.234,50", "1,234.50", ",35", "0x10", "١٢"]
)
def test_a_bad_major_amount_is_a_row_problem_on_its_line(value: str) -> None:
    sale, problem = items(f"ticket;Montant;sold_at\nT0;0,10;2026-11-30 18:41\nT1;{value};2026-11-30 18:42\n")
    assert isinstance(sale, Sale) and isinstance(problem, RowProblem)
    assert (problem.line, problem.field, problem.reason) == (3, "Montant", "amount")


@pytest.mark.parametrize("value", ["", "0", "0,35", "3.5", "-35", "+35", "1 234", "1e3", "35c", "١٢", "9" * 17])
def test_a_bad_minor_amount_is_a_row_problem(value: str) -> None:
    problem = problem_of("ticket;cents;sold_at", f"T1;{value};2026-11-30 18:42")
    assert (problem.line, problem.field, problem.reason) == (2, "cents", "amount")


def test_decimals_in_a_cents_column_are_explained() -> None:
    problem = problem_of("ticket;cents;sold_at", "T1;0,35;2026-11-30 18:42")
    assert "'0,35'" in problem.message and "whole cents" in problem.message


def test_a_currency_without_minor_unit_refuses_decimals() -> None:
    header = "ticket;montant;sold_at"
    assert [s.amount for s in items(f"{header}\nT1;150;2026-11-30 18:42\n", currency="JPY")] == [150]
    (problem,) = items(f"{header}\nT1;150,5;2026-11-30 18:42\n", currency="JPY")
    assert isinstance(problem, RowProblem) and problem.reason == "amount"


def test_an_amount_in_another_currency_is_a_currency_problem() -> None:
    problem = problem_of("ticket;montant;sold_at", "T1;0,35 USD;2026-11-30 18:42")
    assert (problem.reason, problem.field) == ("currency", "montant")
    usd = items("ticket;montant;sold_at\nT1;0,35 €;2026-11-30 18:42\n", currency="USD")
    assert [p.reason for p in usd] == ["currency"]


# --------------------------------------------------------------------------- ticket, currency


@pytest.mark.parametrize("ticket", ["", "   ", "T" * 65, "T\x07", "T\u200b1", "T\x1b[31m"])
def test_a_missing_long_or_control_character_ticket_is_a_row_problem(ticket: str) -> None:
    problem = problem_of("ticket;cents;sold_at", f"{ticket};35;2026-11-30 18:42")
    assert (problem.line, problem.field, problem.reason) == (2, "ticket", "ticket")


def test_a_64_character_ticket_is_accepted() -> None:
    sale = only(f"ticket;cents;sold_at\n{'T' * 64};35;2026-11-30 18:42\n")
    assert isinstance(sale, Sale) and len(sale.ticket_id) == 64


def test_messages_name_the_value_cut_to_40_characters() -> None:
    problem = problem_of("ticket;cents;sold_at", f"{'A' * 100};35;2026-11-30 18:42")
    assert "A" * 40 + "..." in problem.message and "A" * 41 not in problem.message


@pytest.mark.parametrize("value", ["EUR", "eur", "€", " Eur "])
def test_a_currency_column_holding_the_expected_currency_passes(value: str) -> None:
    sale = only(f"ticket;cents;devise;sold_at\nT1;35;{value};2026-11-30 18:42\n")
    assert isinstance(sale, Sale) and sale.currency == "EUR"


@pytest.mark.parametrize("value", ["USD", "", "euro"])
def test_a_currency_column_holding_another_currency_is_a_row_problem(value: str) -> None:
    problem = problem_of("ticket;cents;Devise;sold_at", f"T1;35;{value};2026-11-30 18:42")
    assert (problem.line, problem.field, problem.reason) == (2, "Devise", "currency")


# --------------------------------------------------------------------------- sale time


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-30T18:42:00+01:00",
        "2026-11-30T17:42:00Z",
        "2026-11-30T12:42:00-05:00",
        "2026-11-30 18:42:00",
        "2026-11-30 18:42",
        "2026-11-30T18:42",
        "30/11/2026 18:42",
        "30/11/2026 18:42:00",
        "30/11/2026 18h42",
        "2026-11-30 18h42",
    ],
)
def test_one_cell_sale_times_are_read_in_every_accepted_form(value: str) -> None:
    sale = only(f"ticket;cents;sold_at\nT1;35;{value}\n")
    assert isinstance(sale, Sale) and sale.sold_at == utc(2026, 11, 30, 17, 42)
    assert sale.sold_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("day", "clock"),
    [("30/11/2026", "18h42"), ("30/11/2026", "18:42"), ("2026-11-30", "18:42:00"), ("30/11/2026", "18H42")],
)
def test_a_date_and_a_time_column_combine(day: str, clock: str) -> None:
    sale = only(f"ticket;cents;date;heure\nT1;35;{day};{clock}\n")
    assert isinstance(sale, Sale) and sale.sold_at == utc(2026, 11, 30, 17, 42)


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2026-07-01 12:00", utc(2026, 7, 1, 10, 0)),  # summer: UTC+2
        ("2026-01-15 12:00", utc(2026, 1, 15, 11, 0)),  # winter: UTC+1
        ("2026-03-29 01:59", utc(2026, 3, 29, 0, 59)),  # just before spring forward
        ("2026-03-29 03:00", utc(2026, 3, 29, 1, 0)),  # just after it
        ("2026-03-29 02:30", utc(2026, 3, 29, 1, 30)),  # skipped hour: offset before the change (fold=0)
        ("2026-10-25 02:30", utc(2026, 10, 25, 0, 30)),  # repeated hour: first occurrence (fold=0)
        ("2026-10-25 03:00", utc(2026, 10, 25, 2, 0)),  # after fall back
    ],
)
def test_naive_times_are_paris_time_converted_to_utc_across_dst(local: str, expected: datetime) -> None:
    sale = only(f"ticket;cents;sold_at\nT1;35;{local}\n")
    assert isinstance(sale, Sale) and sale.sold_at == expected


def test_naive_times_follow_the_given_timezone_and_offsets_win_over_it() -> None:
    text = "ticket;cents;sold_at\nT1;35;2026-07-01 12:00\nT2;35;2026-07-01T12:00:00+02:00\n"
    assert [s.sold_at for s in items(text, timezone="America/New_York")] == [
        utc(2026, 7, 1, 16, 0),
        utc(2026, 7, 1, 10, 0),
    ]


@pytest.mark.parametrize(
    "value",
    ["", "hier", "2026-11-30", "30/11/2026", "31/02/2026 10:00", "2026-11-30 25:00", "30/11/26 18:42", "1764524520"],
)
def test_an_unreadable_sale_time_is_a_row_problem(value: str) -> None:
    problem = problem_of("ticket;cents;Horodatage", f"T1;35;{value}")
    assert (problem.line, problem.field, problem.reason) == (2, "Horodatage", "sold_at")


def test_a_bad_date_or_time_cell_names_its_own_column() -> None:
    header = "ticket;cents;Jour;Heure"
    assert problem_of(header, "T1;35;32/11/2026;18:42").field == "Jour"
    assert problem_of(header, "T1;35;30/11/2026;18:61").field == "Heure"
    assert problem_of(header, "T1;35;30/11/2026;").reason == "sold_at"


# --------------------------------------------------------------------------- cells and lines


def test_a_row_with_missing_cells_is_a_columns_problem() -> None:
    problem = problem_of("ticket;cents;sold_at", "T1;35")
    assert (problem.line, problem.field, problem.reason) == (2, None, "columns")


def test_extra_empty_cells_are_padding_but_extra_values_are_a_columns_problem() -> None:
    text = "ticket;cents;sold_at\nT1;35;2026-11-30 18:42;;\nT2;35;2026-11-30 18:42;x\n"
    first, second = items(text)
    assert isinstance(first, Sale)
    assert isinstance(second, RowProblem) and (second.line, second.reason) == (3, "columns")


def test_an_unclosed_quote_is_a_columns_problem_and_the_next_row_is_read() -> None:
    text = 'ticket,cents,sold_at\nT1,"35,2026-11-30 18:42\nT2,20,2026-11-30 18:42\n'
    problem, sale = items(text)
    assert isinstance(problem, RowProblem) and (problem.line, problem.reason) == (2, "columns")
    assert isinstance(sale, Sale) and sale.line == 3


def test_a_line_over_10000_characters_is_a_columns_problem() -> None:
    text = f"ticket;cents;sold_at;note\nT1;35;2026-11-30 18:42;{'x' * 10_000}\nT2;35;2026-11-30 18:42;ok\n"
    problem, sale = items(text)
    assert isinstance(problem, RowProblem) and (problem.line, problem.reason) == (2, "columns")
    assert isinstance(sale, Sale) and sale.line == 3


def test_every_problem_is_reported_and_good_rows_still_come_through() -> None:
    text = (
        "ticket;montant;sold_at\n"
        "T1;0,35;2026-11-30 18:42\n"
        ";0,35;2026-11-30 18:42\n"
        "T3;zero;2026-11-30 18:42\n"
        "T4;0,35;tomorrow\n"
        "T5;0,35\n"
        "T6;0,20;2026-11-30 18:43\n"
    )
    found = [(i.line, i.reason if isinstance(i, RowProblem) else "sale") for i in items(text)]
    assert found == [(2, "sale"), (3, "ticket"), (4, "amount"), (5, "sold_at"), (6, "columns"), (7, "sale")]


# --------------------------------------------------------------------------- control total


@pytest.mark.parametrize("label", ["Total", "TOTAL", "total:", "Total :"])
def test_a_total_row_declares_the_control_total_and_is_not_a_sale(label: str) -> None:
    result = till(f"ticket;montant;sold_at\nT1;0,35;2026-11-30 18:42\nT2;1,65;2026-11-30 18:43\n{label};2,00;\n\n")
    assert [s.ticket_id for s in result] == ["T1", "T2"]
    assert result.declared_total == 200


def test_the_total_is_read_in_the_files_amount_unit() -> None:
    result = till("ticket;cents;date;heure\nT1;35;30/11/2026;18:42\nTOTAL;35;;\n")
    assert len(list(result)) == 1
    assert result.declared_total == 35


def test_a_zero_total_is_allowed_for_a_day_without_sales() -> None:
    result = till("ticket;cents;sold_at\nTotal;0;\n")
    assert list(result) == []
    assert result.declared_total == 0


def test_the_declared_total_is_known_only_after_the_total_row() -> None:
    result = till("ticket;cents;sold_at\nT1;35;2026-11-30 18:42\nTotal;35\n")
    assert result.declared_total is None
    list(result)
    assert result.declared_total == 35


@pytest.mark.parametrize("value", ["", "abc", "-35", "0,35"])
def test_a_malformed_total_stops_the_file(value: str) -> None:
    problem = file_problem(f"ticket;cents;sold_at\nT1;35;2026-11-30 18:42\nTotal;{value};\n".encode())
    assert (problem.reason, problem.line, problem.field) == ("control_total", 3, "cents")


def test_a_row_after_the_total_stops_the_file() -> None:
    problem = file_problem(b"ticket;cents;sold_at\nTotal;35;\n\nT1;35;2026-11-30 18:42\n")
    assert (problem.reason, problem.line) == ("control_total", 4)
    assert "last row" in problem.message


# --------------------------------------------------------------------------- arguments


def test_an_unknown_currency_or_encoding_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        read_sales(io.BytesIO(FRENCH_FILE.encode()), currency="XXX")
    with pytest.raises(ValueError):
        read_sales(io.BytesIO(FRENCH_FILE.encode()), encoding="cp1252")
    with pytest.raises(ValueError):
        read_sales(io.BytesIO(FRENCH_FILE.encode()), encoding="no-such-codec")


def test_file_problem_carries_a_stable_code_reason_line_and_field() -> None:
    problem = FileProblem("broken", reason="header", line=1)
    assert (problem.code, problem.reason, problem.line, problem.field, problem.message) == (
        "invalid-file",
        "header",
        1,
        None,
        "broken",
    )


# --------------------------------------------------------------------------- streaming


class GeneratedStream(io.RawIOBase):
    """A read-only byte stream produced by a generator, never held whole in memory."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def generated_lines(count: int) -> Iterator[bytes]:
    yield "N° ticket;Montant;Date;Heure\r\n".encode()
    for i in range(count):
        yield f"T{i:07d};0,{i % 99 + 1:02d};30/11/2026;{i % 24:02d}h{i % 60:02d}\r\n".encode()


@pytest.mark.slow  # tracemalloc slows every allocation: about 12 s here, 1 s without it
def test_a_200000_line_file_streams_in_bounded_memory() -> None:
    count, total = 0, 0
    tracemalloc.start()
    try:
        for item in read_sales(GeneratedStream(generated_lines(200_000))):
            if not isinstance(item, Sale):
                raise AssertionError(item)
            count, total = count + 1, total + item.amount
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000
    assert total == sum(i % 99 + 1 for i in range(200_000))
    assert peak < 3 * 1024 * 1024


def test_a_huge_line_is_skipped_without_being_held_in_memory() -> None:
    header = [b"ticket;cents;sold_at\n"]
    huge = [b"x" * 65_536] * 80  # 5 MiB without a newline
    rest = [b"\nT2;35;2026-11-30 18:42\n"]
    tracemalloc.start()
    try:
        found = list(read_sales(GeneratedStream(header + huge + rest)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(i.line, type(i).__name__) for i in found] == [(2, "RowProblem"), (3, "Sale")]
    assert peak < 1024 * 1024


# --------------------------------------------------------------------------- round trip property

TICKET_ALPHABET = string.ascii_letters + string.digits + " -_/#;,\"'" + "éèàçôÉ"
TICKETS = (
    st.text(TICKET_ALPHABET, min_size=1, max_size=24)
    .map(str.strip)
    .filter(lambda t: bool(t) and t.lower().rstrip(": ") != "total")
)
MOMENTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)).map(
    lambda moment: moment.replace(microsecond=0)
)
SALES = st.lists(st.tuples(TICKETS, st.integers(1, 10**7), MOMENTS), max_size=15)

#: Each date form: whether it is a (date, time) pair of cells, whether it keeps the seconds, whether it is naive.
DATE_FORMS = {
    "iso_offset": (False, True, False),
    "iso_z": (False, True, False),
    "iso_naive": (False, True, True),
    "iso_minutes": (False, False, True),
    "french": (False, False, True),
    "french_seconds": (False, True, True),
    "pair_colon": (True, False, True),
    "pair_h": (True, False, True),
    "pair_iso": (True, True, True),
}


def date_cells(moment: datetime, form: str) -> list[str]:
    local = moment.astimezone(PARIS)
    return {
        "iso_offset": lambda: [local.isoformat()],
        "iso_z": lambda: [moment.strftime("%Y-%m-%dT%H:%M:%SZ")],
        "iso_naive": lambda: [local.strftime("%Y-%m-%d %H:%M:%S")],
        "iso_minutes": lambda: [local.strftime("%Y-%m-%d %H:%M")],
        "french": lambda: [local.strftime("%d/%m/%Y %H:%M")],
        "french_seconds": lambda: [local.strftime("%d/%m/%Y %H:%M:%S")],
        "pair_colon": lambda: [local.strftime("%d/%m/%Y"), local.strftime("%H:%M")],
        "pair_h": lambda: [local.strftime("%d/%m/%Y"), local.strftime("%Hh%M")],
        "pair_iso": lambda: [local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S")],
    }[form]()


def major_text(amount: int, mark: str, grouping: str) -> str:
    units = f"{amount // 100:,}".replace(",", grouping)
    return units if amount % 100 == 0 and mark == "" else f"{units}{mark or ','}{amount % 100:02d}"


@st.composite
def dialects(draw: st.DrawFn) -> dict[str, object]:
    form = draw(st.sampled_from(sorted(DATE_FORMS)))
    pair = DATE_FORMS[form][0]
    case = draw(st.sampled_from([str.lower, str.upper, str.title]))
    return {
        "delimiter": draw(st.sampled_from([";", ",", "\t"])),
        "encoding": draw(st.sampled_from(["utf-8", "utf-8-sig", "iso-8859-15"])),
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "final_newline": draw(st.booleans()),
        "unit": draw(st.sampled_from(["major", "minor"])),
        "mark": draw(st.sampled_from([",", ".", ""])),
        "grouping": draw(st.sampled_from(["", " ", "\u00a0"])),
        "symbol": draw(st.sampled_from(["", " €", "€", " EUR"])),
        "form": form,
        "ticket_name": case(draw(st.sampled_from(TICKET_COLUMNS))),
        "date_names": [case(draw(st.sampled_from(DATE_COLUMNS))), case(draw(st.sampled_from(TIME_COLUMNS)))]
        if pair
        else [case(draw(st.sampled_from((*TIMESTAMP_COLUMNS, "date", "date_vente"))))],
        "currency_column": draw(st.booleans()),
        "trailer": draw(st.booleans()),
    }


def amount_text(amount: int, dialect: dict[str, object]) -> str:
    if dialect["unit"] == "minor":
        return str(amount) + str(dialect["symbol"])
    return major_text(amount, str(dialect["mark"]), str(dialect["grouping"])) + str(dialect["symbol"])


def write_file(sales: list[tuple[str, int, datetime]], dialect: dict[str, object]) -> bytes:
    amount_name = "Montant" if dialect["unit"] == "major" else "Centimes"
    currency = ["Devise"] if dialect["currency_column"] else []
    names = [dialect["ticket_name"], amount_name, *dialect["date_names"], *currency, "Caisse"]
    out = io.StringIO()
    writer = csv.writer(out, delimiter=str(dialect["delimiter"]), lineterminator=str(dialect["newline"]))
    writer.writerow(names)
    for ticket, amount, moment in sales:
        row = [ticket, amount_text(amount, dialect), *date_cells(moment, str(dialect["form"]))]
        writer.writerow(row + ["eur"] * len(currency) + ["2"])
    if dialect["trailer"]:
        total = sum(amount for _, amount, _ in sales)
        writer.writerow(["TOTAL", amount_text(total, dialect)] + [""] * (len(names) - 2))
    text = out.getvalue() if dialect["final_newline"] else out.getvalue().removesuffix(str(dialect["newline"]))
    return text.encode(str(dialect["encoding"]))


def expected_sales(sales: list[tuple[str, int, datetime]], form: str) -> list[Sale]:
    _, seconds, _ = DATE_FORMS[form]
    return [
        Sale(line, ticket, amount, "EUR", moment if seconds else moment.replace(second=0))
        for line, (ticket, amount, moment) in enumerate(sales, start=2)
    ]


def expected_encoding(data: bytes, encoding: str) -> str:
    """An all-ASCII latin-9 file is indistinguishable from UTF-8, and is reported as such."""
    if encoding == "iso-8859-15" and data.isascii():
        return "utf-8"
    return encoding


@settings(max_examples=300, deadline=None)
@given(SALES, dialects())
def test_valid_sales_written_in_any_dialect_read_back_exactly(
    sales: list[tuple[str, int, datetime]], dialect: dict[str, object]
) -> None:
    if DATE_FORMS[str(dialect["form"])][2]:
        assume(all(moment.astimezone(PARIS).fold == 0 for _, _, moment in sales))
    data = write_file(sales, dialect)
    result = read_sales(io.BytesIO(data))
    assert list(result) == expected_sales(sales, str(dialect["form"]))
    assert result.delimiter == dialect["delimiter"]
    assert result.amount_unit == dialect["unit"]
    assert result.encoding == expected_encoding(data, str(dialect["encoding"]))
    assert result.declared_total == (sum(a for _, a, _ in sales) if dialect["trailer"] else None)
