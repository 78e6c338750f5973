"""A small Django project for the backend's tests: one app (``ledger``), two aliases on one
SQLite file, ``default`` (writes) and ``replica`` (``read_only``), and a router sending
reads to the replica. The database file and the engine come from the environment
(``LEDGER_DB``; ``LEDGER_ENGINE``, default the library's backend)."""

from __future__ import annotations

import json
import os

SECRET_KEY = "tests-only"
USE_TZ = True
INSTALLED_APPS = ["ledger"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_ENGINE = os.environ.get("LEDGER_ENGINE", "sqlite_resilient.django")
_OPTIONS = json.loads(os.environ.get("LEDGER_OPTIONS", "{}"))
DATABASES = {
    "default": {"ENGINE": _ENGINE, "NAME": os.environ["LEDGER_DB"], "OPTIONS": _OPTIONS},
    "replica": {
        "ENGINE": _ENGINE,
        "NAME": os.environ["LEDGER_DB"],
        "OPTIONS": {**_OPTIONS, "read_only": True} if _ENGINE == "sqlite_resilient.django" else _OPTIONS,
        "TEST": {"MIRROR": "default"},
    },
}
DATABASE_ROUTERS = ["ledger.routers.ReadsToReplica"] if os.environ.get("LEDGER_ROUTER") else []
