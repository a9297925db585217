"""The few Kubernetes API calls the hook Jobs need (in-cluster service account, stdlib only)."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from typing import Any

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def _request(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    with open(f"{SA}/token") as token_file:
        token = token_file.read().strip()
    request = urllib.request.Request(
        f"https://{host}:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code == 404 and method == "GET":
            return None
        raise


def namespace() -> str:
    with open(f"{SA}/namespace") as namespace_file:
        return namespace_file.read().strip()


def get(kind: str, name: str) -> dict[str, Any] | None:
    return _request("GET", f"/api/v1/namespaces/{namespace()}/{kind}/{name}")


def create(kind: str, name: str, data: dict[str, str], labels: dict[str, str]) -> None:
    """Creates a ConfigMap or Secret (stringData); it is kept on uninstall (no owner)."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret" if kind == "secrets" else "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "stringData" if kind == "secrets" else "data": data,
    }
    _request("POST", f"/api/v1/namespaces/{namespace()}/{kind}", body)
