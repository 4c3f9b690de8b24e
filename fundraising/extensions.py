"""Extensions, created unbound and bound to an app in the factory."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from ledger.models import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate(render_as_batch=True, compare_type=True)
