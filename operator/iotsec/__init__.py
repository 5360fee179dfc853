"""iotsec: ITU-T X.1369 security controls for IoT service platforms on Kubernetes."""

__version__ = "0.1.0"
