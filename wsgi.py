"""WSGI entry point: ``gunicorn wsgi:app``. A configuration error is one line, not a traceback."""

import sys

from fundraising import ConfigError, create_app

try:
    app = create_app()
except ConfigError as exc:
    sys.exit(f"fundraising: configuration: {exc}")
