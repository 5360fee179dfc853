"""The long-running processes besides the operator: the admission webhook, the audit sink (server and its status
reporter), the backup Job's runner, and the bounded HTTPS serving the two HTTPS servers share."""
