"""The X.1369 conformance report: verdicts per control and scope, with the evidence each was read from.

Pure: an `Inventory` of objects (read from the API server, or from manifest files) goes in, a `ConformanceReport`
comes out (`assess`); renderers turn its JSON document (`SCHEMA_VERSION`) into text, markdown or HTML."""
