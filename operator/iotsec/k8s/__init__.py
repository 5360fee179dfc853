"""The one adapter to the API server (kube.py): server-side apply with field manager `iotsec`, owner references,
pruning, namespace grants. Nothing else in iotsec calls the Kubernetes API."""
