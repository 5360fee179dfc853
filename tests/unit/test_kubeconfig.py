"""The one API adapter reads the kubeconfig KUBECONFIG names when a client is made: the kubernetes library reads the
variable once, at import, so a KUBECONFIG set later (a test, a wrapper process) was silently ignored and
`iotsec report --cluster` read whatever cluster was named at import."""

from __future__ import annotations

import pytest

from iotsec.k8s.kube import ApiError, default_api_client

CONFIG = """apiVersion: v1
kind: Config
current-context: {context}
clusters:
- {{name: one, cluster: {{server: 'https://127.0.0.1:7001'}}}}
- {{name: two, cluster: {{server: 'https://127.0.0.1:7002'}}}}
contexts:
- {{name: one, context: {{cluster: one, user: u}}}}
- {{name: two, context: {{cluster: two, user: u}}}}
users: [{{name: u, user: {{token: t}}}}]
"""


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(CONFIG.format(context="one"))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


def test_the_kubeconfig_named_now_is_read(kubeconfig):
    assert default_api_client().configuration.host == "https://127.0.0.1:7001"
    assert default_api_client("two").configuration.host == "https://127.0.0.1:7002"


def test_a_context_the_kubeconfig_lacks_is_one_clear_error(kubeconfig):
    with pytest.raises(ApiError, match="kubeconfig"):
        default_api_client("three")
