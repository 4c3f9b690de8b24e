"""Pieces every API view uses: the unit of work with idempotency, cursor pages, shared schemas."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import flask_smorest
import marshmallow as ma
from flask import Request, Response, make_response, request
from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import MultiDict

from fundraising.authz import current_principal
from fundraising.errors import IdempotencyKeyReused, InvalidInput
from fundraising.extensions import db
from fundraising.forms import drop_nul
from fundraising.models import IdempotencyRecord
from ledger.driver import Statement
from ledger.unit_of_work import RetryTransaction, run_in_transaction

MAX_KEY_LENGTH = 200
PAGE_DEFAULT = 50
PAGE_MAX = 200
PENDING_STATUS = 0


# --------------------------------------------------------------------------- reading input


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return drop_nul(value)
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


class TextParser(FlaskParser):
    """The API reads JSON bodies and query strings as the pages read forms: NUL characters
    dropped (text columns, PostgreSQL's above all, cannot hold them)."""

    def _raw_load_json(self, req: Request) -> Any:
        return _without_nul(super()._raw_load_json(req))

    def load_querystring(self, req: Request, schema: ma.Schema) -> Any:
        args = MultiDict((key, drop_nul(value)) for key, value in req.args.items(multi=True))
        return self._makeproxy(args, schema)

    def _get_schema(self, argmap: Any, req: Request) -> ma.Schema:
        """A view's schema class is made into an instance once, not once per request (webargs
        would build a new one, a deep copy of every declared field, for each request). A schema
        keeps no state between loads, so one instance serves every request and thread."""
        if isinstance(argmap, type) and issubclass(argmap, ma.Schema):
            return _schema_instance(argmap)
        return super()._get_schema(argmap, req)


@functools.cache
def _schema_instance(schema_class: type[ma.Schema]) -> ma.Schema:
    return schema_class()


class Blueprint(flask_smorest.Blueprint):
    """The API's blueprints: flask-smorest's, reading input through :class:`TextParser`."""

    ARGUMENTS_PARSER = TextParser()


# --------------------------------------------------------------------------- unit of work


def unit_of_work(view: Callable[..., Any]) -> Callable[..., Response]:
    """Run a writing view in one transaction, committed on success, with ``Idempotency-Key``.

    Same key and same request from the same caller: the stored status and body again, and no
    second effect. Same key, another request: 409. The record is inserted before the view runs,
    in the view's transaction, so a concurrent duplicate waits on it and then replays the
    committed response. Keys are scoped to the caller; anonymous calls are not deduplicated.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        key = idempotency_key()
        principal = current_principal()
        scope = principal.key if principal and key else None
        fingerprint = _fingerprint() if scope else ""

        def work(session: Session) -> Response:
            record = None
            if scope:
                claimed = claim_key(session, scope, key, fingerprint)
                if isinstance(claimed, Response):
                    return claimed
                record = claimed
            response = make_response(view(*args, **kwargs))
            if record is not None:
                store_answer(session, record, response)
            return response

        return run_in_transaction(db.session, work)

    return wrapper


def before_transaction(step: Callable[..., None]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run ``step(**view_args)`` before the view's unit of work opens its transaction: the place
    for a call to the payment processor, which must not wait inside a transaction."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            step(**kwargs)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def already_answered() -> bool:
    """True when this request's ``Idempotency-Key`` was already answered for this caller (its
    replay needs no new work before the transaction)."""
    key, principal = request.headers.get("Idempotency-Key"), current_principal()
    if not key or principal is None:
        return False
    found = db.session.scalar(select(IdempotencyRecord.id).where(
        IdempotencyRecord.principal == principal.key, IdempotencyRecord.key == key))
    return found is not None


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidInput("Idempotency-Key must be 1 to 200 printable characters", field="Idempotency-Key")
    return key


def _fingerprint() -> str:
    raw = b"\n".join([request.method.encode(), request.path.encode(), request.query_string,
                      request.get_data(cache=True)])
    return hashlib.sha256(raw).hexdigest()


_RECORDS = IdempotencyRecord.__table__


def _claim(insert_: Any) -> Any:
    return (
        insert_(_RECORDS)
        .values(principal=bindparam("principal"), key=bindparam("key"), method=bindparam("method"),
                path=bindparam("path"), request_hash=bindparam("request_hash"), status_code=PENDING_STATUS,
                content_type="", response_body="", created_at=bindparam("created_at"))
        .on_conflict_do_nothing(index_elements=["principal", "key"])
        .returning(_RECORDS.c.id)
    )


#: Built once (a statement never changes; its values are bound per request), in each dialect's form.
_CLAIM = Statement(_claim(sqlite_insert), postgresql=_claim(postgresql_insert))
_STORE = Statement(
    update(_RECORDS).where(_RECORDS.c.id == bindparam("record_id"))
    .values(status_code=bindparam("status_code"), content_type=bindparam("content_type"),
            response_body=bindparam("response_body"))
)


def claim_key(session: Session, scope: str, key: str, fingerprint: str) -> int | Response:
    """Insert this request's record, or find the one already there: one statement when the key
    is new (``INSERT ... ON CONFLICT DO NOTHING``, which waits for a concurrent holder of the key
    to finish), a second to read the stored answer when it is not."""
    claimed = _CLAIM.scalar(session, {
        "principal": scope, "key": key, "method": request.method, "path": request.path[:500],
        "request_hash": fingerprint, "created_at": datetime.now(UTC)})
    if claimed is not None:
        return claimed
    existing = session.scalar(
        select(IdempotencyRecord).where(IdempotencyRecord.principal == scope, IdempotencyRecord.key == key)
    )
    if existing is None:  # the other holder rolled back between the two statements
        raise RetryTransaction("a concurrent request held this Idempotency-Key")
    if existing.request_hash != fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key was used with another request", field="Idempotency-Key")
    if existing.status_code == PENDING_STATUS:
        raise RetryTransaction("a concurrent request holds this Idempotency-Key")
    response = Response(existing.response_body, status=existing.status_code, content_type=existing.content_type)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def store_answer(session: Session, record_id: int, response: Response) -> None:
    _STORE.execute(session, {
        "record_id": record_id, "status_code": response.status_code,
        "content_type": response.content_type or "application/json",
        "response_body": response.get_data(as_text=True)})


# --------------------------------------------------------------------------- cursor pages


#: A cursor names the last item of the previous page. Its form is documented as a pattern, so
#: any cursor a client can form from the document is one the API accepts.
CURSOR_PATTERN = r"^c[0-9]{1,18}$"


class PageArgs(ma.Schema):
    limit = ma.fields.Integer(load_default=PAGE_DEFAULT, validate=ma.validate.Range(min=1, max=PAGE_MAX))
    cursor = ma.fields.String(load_default=None, validate=ma.validate.Regexp(CURSOR_PATTERN),
                              metadata={"description": "``next_cursor`` of the previous page",
                                        "pattern": CURSOR_PATTERN})


def encode_cursor(last_id: int) -> str:
    return f"c{last_id}"


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not isinstance(cursor, str) or not re.fullmatch(CURSOR_PATTERN, cursor):
        raise InvalidInput("this cursor was not given by the API", field="cursor")
    return int(cursor[1:])


def page(session: Session, query: Select, id_column: Any, limit: int, cursor: str | None) -> dict[str, Any]:
    """One page of ``query`` ordered by ``id_column`` ascending, and the cursor of the next."""
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(id_column > after)
    rows: Sequence[Any] = session.scalars(query.order_by(id_column).limit(limit + 1)).all()
    items = list(rows[:limit])
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}
