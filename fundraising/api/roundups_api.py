"""Round-ups declared by shops' tills and files.

A till sends each sale as it happens (``POST /roundups``): the same ticket again is the first
answer again, so a till that lost its answer simply retries. At the end of the day a shop may
send the whole file instead (``POST /roundups/batches``, the CSV its till software exports): the
body is spooled to a temporary file, bounded by ``ROUNDUP_UPLOAD_MAX_MB``, before the
transaction opens, then read as it streams into one transaction (see
:func:`campaigns.roundups.import_sales`).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import marshmallow as ma
from flask import Response, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from campaigns import roundups
from campaigns.roundup_models import RoundupBatch
from campaigns.roundups import MAX_TICKET_LENGTH, batch_problems
from campaigns.till_csv import FileProblem
from fundraising import shops
from fundraising.api.common import (
    Blueprint,
    PageArgs,
    claim_key,
    idempotency_key,
    page,
    store_answer,
    unit_of_work,
)
from fundraising.authz import current_principal
from fundraising.credentials import Principal
from fundraising.errors import NotFound
from fundraising.extensions import db
from fundraising.models import Role, Shop
from ledger import run_in_transaction
from ledger.money import CURRENCY_EXPONENTS, MAX_AMOUNT

blp = Blueprint("roundups_api", __name__, description="Round-ups declared by shops' tills and files")

CSV_TYPES = ("text/csv", "application/octet-stream")
SPOOL_IN_MEMORY = 1024 * 1024  # beyond a megabyte, the upload waits on disk
READ_CHUNK = 64 * 1024
MAX_ID = 2**63 - 1
#: Moments the database stores in UTC: a year far outside them overflows on conversion.
EARLIEST_YEAR, LATEST_YEAR = 1970, 9998


# --------------------------------------------------------------------------- shared fields


def _a_storable_moment(value: datetime) -> None:
    """Refuse a moment that cannot be stored in UTC (year 1 at +14:00 overflows)."""
    try:
        year = value.astimezone(UTC).year
    except OverflowError:
        year = 0
    if not EARLIEST_YEAR <= year <= LATEST_YEAR:
        raise ma.ValidationError(f"a moment between the years {EARLIEST_YEAR} and {LATEST_YEAR}")


def moment(**kwargs: Any) -> ma.fields.AwareDateTime:
    """An ISO 8601 date and time with its offset (a naive one is refused), storable in UTC."""
    return ma.fields.AwareDateTime(default_timezone=None, validate=_a_storable_moment, **kwargs)


def shop_principal() -> Principal:
    principal = current_principal()
    if principal is None or principal.kind != "shop" or principal.shop is None:
        raise NotFound("only a shop's key declares round-ups")
    return principal


# --------------------------------------------------------------------------- schemas


class RoundupIn(ma.Schema):
    ticket_id = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=MAX_TICKET_LENGTH),
                                 metadata={"description": "the till's ticket number, unique per shop"})
    amount = ma.fields.Integer(strict=True, required=True, validate=ma.validate.Range(min=1, max=MAX_AMOUNT),
                               metadata={"description": "minor units (cents), at most ROUNDUP_MAX_AMOUNT; an "
                                                        "integer, never a float"})
    currency = ma.fields.String(required=True, validate=ma.validate.OneOf(sorted(CURRENCY_EXPONENTS)),
                                metadata={"description": "ISO 4217; the platform's currency"})
    sold_at = moment(required=True, metadata={
        "description": "when the sale happened, with its offset; not in the future, not older than "
                       "ROUNDUP_MAX_AGE_DAYS"})


class RoundupOut(ma.Schema):
    id = ma.fields.Integer()
    ticket_id = ma.fields.String()
    amount = ma.fields.Integer()
    currency = ma.fields.String()
    sold_at = ma.fields.DateTime()
    recorded_at = ma.fields.DateTime()
    vote_code = ma.fields.String(allow_none=True, metadata={
        "description": "the single-use code to print on the receipt, when a round that takes codes is open for "
                       "the shop; null otherwise"})


class BatchQuery(ma.Schema):
    control_total = ma.fields.Integer(load_default=None, validate=ma.validate.Range(min=0, max=MAX_AMOUNT),
                                      metadata={"description": "the sum of the file's round-ups in minor units, as "
                                                               "the till reports it: nothing is recorded unless "
                                                               "the sales add up to it"})
    filename = ma.fields.String(load_default="sales.csv", validate=ma.validate.Length(min=1, max=255))


class BatchProblemOut(ma.Schema):
    line = ma.fields.Integer(metadata={"description": "as a spreadsheet shows it: the header is line 1"})
    field = ma.fields.String(allow_none=True, metadata={"description": "the column, as the file's header names it"})
    reason = ma.fields.String()
    message = ma.fields.String()


class BatchSummaryOut(ma.Schema):
    id = ma.fields.Integer()
    shop_id = ma.fields.Integer()
    filename = ma.fields.String()
    rows_total = ma.fields.Integer()
    rows_recorded = ma.fields.Integer()
    rows_duplicate = ma.fields.Integer(metadata={"description": "tickets already declared, by the till or a file"})
    rows_invalid = ma.fields.Integer()
    amount_recorded = ma.fields.Integer()
    currency = ma.fields.String()
    control_total = ma.fields.Integer(allow_none=True)
    encoding = ma.fields.String()
    delimiter = ma.fields.String()
    amount_unit = ma.fields.String(metadata={"description": "minor or major, as read from the amount column's name"})
    created_at = ma.fields.DateTime()


class BatchOut(BatchSummaryOut):
    problems = ma.fields.List(ma.fields.Nested(BatchProblemOut), metadata={
        "description": "the rows not recorded, by line (the first 1000; rows_invalid counts them all)"})


class BatchList(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(BatchSummaryOut))
    next_cursor = ma.fields.String(allow_none=True)


class BatchListQuery(PageArgs):
    shop_id = ma.fields.Integer(validate=ma.validate.Range(min=1, max=MAX_ID),
                                metadata={"description": "treasurers and admins: one shop's files"})


CSV_BODY = {
    "required": True,
    "description": "the day's sales as the till exports them: comma, semicolon or tab; decimal point, decimal "
                   "comma or cents; UTF-8 (with or without BOM) or ISO-8859-15; CRLF or LF",
    "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in CSV_TYPES},
}


# --------------------------------------------------------------------------- one sale


def roundup_dict(recorded: Any) -> dict[str, Any]:
    r = recorded.roundup
    return {"id": r.id, "ticket_id": r.ticket_id, "amount": r.amount, "currency": r.currency, "sold_at": r.sold_at,
            "recorded_at": r.recorded_at, "vote_code": recorded.vote_code}


@blp.route("/roundups", methods=["POST"])
@unit_of_work
@blp.arguments(RoundupIn)
@blp.response(201, RoundupOut)
@blp.alt_response(200, schema=RoundupOut, description="this ticket was already recorded: the first answer again "
                                                      "(header Idempotent-Replayed: true)")
@blp.doc(security=[{"bearer": []}])
def record_roundup(data: dict[str, Any]) -> Any:
    """One sale's round-up, sent by the shop's till with the shop's key. The same ticket again is
    the first answer again (200); the same ticket with another amount is a 409. When a round that
    takes codes is open for the shop, ``vote_code`` is the code to print on the receipt."""
    shop_id = shop_principal().id
    recorded = roundups.record_roundup(db.session, shop_id=shop_id, rules=shops.rules(), now=shops.utcnow(),
                                       code_secret=shops.code_secret(), **data)
    if recorded.replayed:
        return roundup_dict(recorded), 200, {"Idempotent-Replayed": "true"}
    return roundup_dict(recorded)


# --------------------------------------------------------------------------- a day's file


def batch_dict(batch: RoundupBatch, *, with_problems: bool = True) -> dict[str, Any]:
    found = {name: getattr(batch, name) for name in BatchSummaryOut._declared_fields}
    if with_problems:
        found["problems"] = batch_problems(batch)
    return found


def _check_media_type() -> None:
    if request.mimetype not in CSV_TYPES:
        raise UnsupportedMediaType(f"send the file as the body, with Content-Type {' or '.join(CSV_TYPES)}")


@dataclass
class Spooled:
    """The request's body, waiting in a temporary file, and what identifies this request."""

    file: IO[bytes]
    #: Like :func:`fundraising.api.common.unit_of_work`'s, over the body's digest (not its bytes).
    fingerprint: str


@contextmanager
def _spooled_body(limit: int) -> Iterator[Spooled]:
    """The request's body in a temporary file (in memory while small), refused past ``limit`` bytes."""
    too_big = f"a file has at most {current_app.config['ROUNDUP_UPLOAD_MAX_MB']} MB: send one day at a time"
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge(too_big)
    digest = hashlib.sha256()
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        size = 0
        while chunk := request.stream.read(READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise RequestEntityTooLarge(too_big)
            digest.update(chunk)
            spool.write(chunk)
        raw = b"\n".join([request.method.encode(), request.path.encode(), request.query_string,
                          digest.hexdigest().encode()])
        yield Spooled(spool, hashlib.sha256(raw).hexdigest())  # type: ignore[arg-type]


def _import_once(shop_id: int, args: dict[str, Any], body: Spooled) -> Response:
    """Import the file in one transaction; with an ``Idempotency-Key``, once: the same key and
    file again is the first report again (the key is claimed as the unit of work claims it,
    which could not fingerprint a body it never holds in memory)."""
    key = idempotency_key()
    scope = current_principal().key if key else None

    def work(session: Session) -> Response:
        record = None
        if scope:
            claimed = claim_key(session, scope, key, body.fingerprint)
            if isinstance(claimed, Response):
                return claimed
            record = claimed
        body.file.seek(0)  # a retried transaction reads the file again, from its start
        batch = shops.import_file(session, session.get(Shop, shop_id), body.file, filename=args["filename"],
                                  source="api", uploaded_by=None, control_total=args["control_total"])
        response = jsonify(BatchOut().dump(batch_dict(batch)))
        response.status_code = 201
        if record is not None:
            store_answer(session, record, response)
        return response

    try:
        return run_in_transaction(db.session, work)
    except FileProblem as exc:
        if exc.field is None and exc.line is None:
            exc.field = "file"  # the body is the file: name it, so that ``errors`` says where
        raise


@blp.route("/roundups/batches", methods=["POST"])
@blp.arguments(BatchQuery, location="query")
@blp.response(201, BatchOut)
@blp.doc(security=[{"bearer": []}], requestBody=CSV_BODY)
def upload_batch(args: dict[str, Any]) -> Response:
    """A day's file of sales, as the till exports it (body ``text/csv``). Valid rows are recorded,
    each ticket once (sending the same or a corrected file again records only what is new);
    rows that cannot be recorded are listed in ``problems`` with their line. A problem with the
    whole file (header, encoding, ``control_total``) is a 422 and records nothing. With an
    ``Idempotency-Key``, a retry of the same file answers the first report again."""
    shop_id = shop_principal().id
    _check_media_type()
    idempotency_key()  # a malformed key is refused before the body is read
    db.session.rollback()  # no transaction stays open while the body arrives
    with _spooled_body(current_app.config["ROUNDUP_UPLOAD_MAX_MB"] * 1024 * 1024) as body:
        return _import_once(shop_id, args, body)


def readable_batch(batch_id: int) -> RoundupBatch:
    """A batch the caller may read: its own shop's for a shop's key, any for treasurers and admins."""
    batch = db.session.get(RoundupBatch, batch_id)
    principal = current_principal()
    if batch is None or principal is None:
        raise NotFound(f"no batch {batch_id}")
    if principal.kind == "shop" and batch.shop_id == principal.id:
        return batch
    if principal.user is not None and principal.user.has_role(Role.TREASURER, Role.ADMIN):
        return batch
    raise NotFound(f"no batch {batch_id}")


@blp.route("/roundups/batches", methods=["GET"])
@blp.arguments(BatchListQuery, location="query")
@blp.response(200, BatchList)
@blp.doc(security=[{"bearer": []}])
def list_batches(args: dict[str, Any]) -> dict[str, Any]:
    """Files received, oldest first: a shop's key sees its own; treasurers and admins every
    shop's, or one's with ``?shop_id=``."""
    principal = current_principal()
    query = select(RoundupBatch)
    if principal.kind == "shop":
        query = query.where(RoundupBatch.shop_id == principal.id)
    if args.get("shop_id"):
        query = query.where(RoundupBatch.shop_id == args["shop_id"])
    found = page(db.session, query, RoundupBatch.id, args["limit"], args["cursor"])
    return {"items": [batch_dict(b, with_problems=False) for b in found["items"]],
            "next_cursor": found["next_cursor"]}


@blp.route("/roundups/batches/<int:batch_id>", methods=["GET"])
@blp.response(200, BatchOut)
@blp.doc(security=[{"bearer": []}])
def get_batch(batch_id: int) -> dict[str, Any]:
    """A file's report: rows recorded, duplicates, and the rows not recorded with their line."""
    return batch_dict(readable_batch(batch_id))
