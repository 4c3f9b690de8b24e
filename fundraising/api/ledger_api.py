"""The treasurer's view of the books over the API."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from fundraising.api.common import Blueprint
from fundraising.extensions import db
from ledger import trial_balance

blp = Blueprint("ledger_api", __name__, description="The books, for treasurers")


class TrialBalanceArgs(ma.Schema):
    at = ma.fields.Date(load_default=None, metadata={"description": "entries effective on or before (YYYY-MM-DD)"})


class TrialBalanceRowOut(ma.Schema):
    code = ma.fields.String()
    account = ma.fields.String(attribute="key")
    name = ma.fields.String()
    type = ma.fields.String()
    currency = ma.fields.String()
    debits = ma.fields.Integer()
    credits = ma.fields.Integer()
    balance = ma.fields.Integer()


class TrialBalanceOut(ma.Schema):
    at = ma.fields.Date(allow_none=True)
    accounts = ma.fields.List(ma.fields.Nested(TrialBalanceRowOut))
    totals = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Dict())


@blp.route("/ledger/trial-balance", methods=["GET"])
@blp.arguments(TrialBalanceArgs, location="query")
@blp.response(200, TrialBalanceOut)
@blp.doc(security=[{"bearer": []}])
def trial_balance_view(args: dict[str, Any]) -> dict[str, Any]:
    """Debits, credits and balance of every account, in minor units."""
    rows = trial_balance(db.session, args["at"])
    totals: dict[str, dict[str, int]] = {}
    for row in rows:
        total = totals.setdefault(row.currency, {"debits": 0, "credits": 0})
        total["debits"] += row.debits
        total["credits"] += row.credits
    return {"at": args["at"], "accounts": rows, "totals": totals}
