"""The ledger: named counters, and one entry per increment (its number unique per counter)."""

from __future__ import annotations

from django.db import models


class Counter(models.Model):
    name = models.CharField(max_length=50, unique=True)
    value = models.IntegerField(default=0)


class Entry(models.Model):
    counter = models.ForeignKey(Counter, on_delete=models.CASCADE, related_name="entries")
    n = models.IntegerField()
    writer = models.CharField(max_length=20)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["counter", "n"], name="one_entry_per_increment")]
