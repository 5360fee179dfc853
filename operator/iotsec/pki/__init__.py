"""Keys and certificates (pure): the webhook's CA and serving certificate, TLS contexts reloaded without a restart,
application keys and their rotation, the device CA, device certificates, CRLs and the registry."""
