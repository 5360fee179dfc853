"""Admission policy: pure checks of Kubernetes objects against X.1369 controls (no I/O, no API client)."""
