"""Browsable API documentation at ``/api/v1/docs``, rendered on the server from the OpenAPI
document: no JavaScript, nothing loaded from elsewhere, readable with the page's own styles."""

from __future__ import annotations

from flask import Blueprint, render_template

from fundraising.api import API_PREFIX, api

bp = Blueprint("apidocs", __name__, url_prefix=API_PREFIX)

METHODS = ("get", "post", "put", "patch", "delete")


@bp.get("/docs")
def docs() -> str:
    spec = api.spec.to_dict()
    operations = [
        {"method": method.upper(), "path": path, **operation}
        for path, item in sorted(spec.get("paths", {}).items())
        for method, operation in item.items()
        if method in METHODS
    ]
    return render_template("api_docs.html", spec=spec, operations=operations)
