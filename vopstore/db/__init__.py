"""The store's database: models, engines, migrations."""

from vopstore.db.engine import make_engine, redact, translate_errors
from vopstore.db.migrate import HEAD, check, ensure_head, stamped_revision, current_revision, head_revision, require_head, upgrade

__all__ = ["make_engine", "redact", "translate_errors", "check", "current_revision", "head_revision", "HEAD", "ensure_head", "stamped_revision",
           "require_head", "upgrade"]
