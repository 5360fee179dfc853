"""Backup Jobs: restic with strict outcome rules (X.1369 §9.2, §9.6)."""
