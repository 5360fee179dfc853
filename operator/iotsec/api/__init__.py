"""The four custom resources as typed models: the single source of the CRDs (crd.py) and of offline validation
(validation.py), with the value types their fields use (durations, quantities, cron). The lowest layer: imports
nothing else of iotsec."""
