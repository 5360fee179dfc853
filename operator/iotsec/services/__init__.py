"""Imperative cluster operations shared by the CLI and the controllers (issue and revoke device certificates,
restore a backup, read an audit policy's credentials): they take a Kube adapter, never print or parse arguments."""
