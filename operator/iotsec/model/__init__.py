"""What every layer shares, once: labels and annotations, status conditions, the X.1369 control catalog, the
platform (release and audit namespaces, images), settings (config.py), selectors, time, PEM, workload kinds, manifest
files. Pure: no I/O beyond reading the files it is given, no API client."""
