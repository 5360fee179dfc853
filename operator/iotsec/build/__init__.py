"""Pure builders: custom resources in, desired Kubernetes objects out. No I/O, no API client."""
