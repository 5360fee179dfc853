"""Pure builders: custom resources in, desired Kubernetes objects out (one module per kind, plus the webhook
configuration, the API server's audit policy, RBAC tables and `iotsec render`). No I/O, no API client."""
