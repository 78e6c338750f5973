"""A Django database backend: Django's own SQLite backend, with its connections made by
:func:`sqlite_resilient.connect`.

``pip install 'sqlite_resilient[django]'`` (Django 5.2 or later), then in ``settings.py``::

    DATABASES = {
        "default": {
            "ENGINE": "sqlite_resilient.django",
            "NAME": BASE_DIR / "app.db",
            "OPTIONS": {"timeout": 10},        # optional: timeout, pragmas, settings, read_only
        },
    }

What changes against ``django.db.backends.sqlite3`` (see :mod:`sqlite_resilient.django.base`):
WAL and the library's validated pragmas, the lock-wait budget, the write queue and the WAL
fallback; ``transaction.atomic()`` blocks begin ``IMMEDIATE`` (unless ``OPTIONS`` name a
``transaction_mode``), so a block that reads then writes takes the write lock first and
cannot fail halfway with ``SQLITE_BUSY_SNAPSHOT``; ``"read_only": True`` opens read-only
connections for a read alias. ``@retry_on_lock`` works around a unit of work: it finds the
lock error inside ``django.db.OperationalError`` and never retries inside an ``atomic()``
block that was open before the call.
"""
