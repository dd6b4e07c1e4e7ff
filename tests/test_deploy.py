"""The deployment: Dockerfile, docker-compose.yml (the single server and the cluster profile) and
the Kubernetes manifests checked statically with the real tools (docker-compose config, kubectl
kustomize, kubernetes-validate, haproxy -c; no Docker engine or cluster here), and the container's
command run on the host exactly as compose would run it."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from framecast_server.config import Peer, Settings

from .conftest import ROOT, free_port
from .media import decode
from .peers import NginxRtmp

COMPOSE_KEY = "compose-test-key"


def test_compose_refuses_to_start_without_api_keys():
    env = {k: v for k, v in os.environ.items() if k != "FRAMECAST_API_KEYS"}
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode != 0 and "set FRAMECAST_API_KEYS" in out.stderr


def compose_config(*flags: str) -> dict:
    """The compose file as docker-compose resolves it (variables substituted, validated); flags such
    as --profile go before the command. Debian's docker-compose (1.29) prints every service whatever
    the profiles: active_services() applies them."""
    env = {k: v for k, v in os.environ.items() if k != "COMPOSE_PROFILES"}
    env["FRAMECAST_API_KEYS"] = COMPOSE_KEY
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), *flags, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def dockerfile() -> dict:
    """FROM, ENV, USER, HEALTHCHECK and CMD of docker/Dockerfile."""
    text = (ROOT / "docker" / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    info: dict = {"env": {}}
    for line in lines:
        keyword, _, rest = line.partition(" ")
        if keyword == "FROM":
            info["from"] = rest
        elif keyword == "ENV":
            info["env"].update(dict(re.findall(r"(\w+)=(\S+)", rest)))
        elif keyword == "USER":
            info["user"] = rest
        elif keyword == "HEALTHCHECK":
            info["healthcheck"] = json.loads(rest[rest.index("CMD") + 3 :].strip())
        elif keyword == "CMD":
            info["cmd"] = json.loads(rest)
    return info


def test_compose_file_is_valid_and_complete():
    config = compose_config()
    app, mtx = config["services"]["framecast"], config["services"]["mediamtx"]
    assert (ROOT / app["build"]["context"] / app["build"]["dockerfile"]).is_file()
    assert app["restart"] == mtx["restart"] == "unless-stopped"
    assert app["healthcheck"]["test"][0] == "CMD" and "/healthz" in " ".join(app["healthcheck"]["test"])
    assert "wget" in mtx["healthcheck"]["test"]
    assert app["depends_on"]["mediamtx"]["condition"] == "service_healthy"
    env = app["environment"]
    assert env["FRAMECAST_OUTPUT_DIR"] == "/data/output" and env["FRAMECAST_API_KEYS"] == COMPOSE_KEY
    assert "outputs:/data/output:rw" in app["volumes"] and "outputs" in config["volumes"]
    # The stop grace period outlasts the encoders' finish timeout, so SIGTERM can finalize outputs.
    period = re.fullmatch(r"(\d+)s", app["stop_grace_period"])
    assert period is not None, app["stop_grace_period"]
    grace = int(period.group(1))
    assert grace > float(env["FRAMECAST_FINISH_TIMEOUT"])
    assert mtx["image"].startswith("bluenviron/mediamtx:")
    assert {p["target"] for p in mtx["ports"]} >= {1935, 8888, 8889}
    assert f"{ROOT / 'docker' / 'mediamtx.yml'}:/mediamtx.yml:ro" in mtx["volumes"]


def test_mediamtx_config_serves_rtmp_hls_and_webrtc():
    mtx = yaml.safe_load((ROOT / "docker" / "mediamtx.yml").read_text())
    assert mtx["rtmp"] is True and mtx["rtmpAddress"] == ":1935"
    assert mtx["hls"] is True and mtx["webrtc"] is True and mtx["api"] is True
    assert "all_others" in mtx["paths"]


def test_dockerfile_is_slim_unprivileged_with_healthcheck():
    info = dockerfile()
    assert re.fullmatch(r"python:3\.\d+-slim", info["from"])
    assert info["user"] not in ("", "root", "0")
    assert info["cmd"] == ["framecast", "serve"]
    assert info["healthcheck"][0] == "python" and "/healthz" in info["healthcheck"][-1]


def test_container_command_runs_on_the_host_as_compose_would(tmp_path):
    """Dockerfile ENV + compose environment + CMD, on loopback and a free port; then publish."""
    info = dockerfile()
    service = compose_config()["services"]["framecast"]
    port = free_port()
    env = {
        **os.environ,
        **info["env"],
        **{k: str(v) for k, v in service["environment"].items()},
        # The host differs from the container only in where it listens and writes.
        "FRAMECAST_HOST": "127.0.0.1",
        "FRAMECAST_PORT": str(port),
        "FRAMECAST_OUTPUT_DIR": str(tmp_path / "data"),
        "FRAMECAST_API_KEY": COMPOSE_KEY,  # what a client of this deployment uses
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("FRAMECAST_SERVER", None)
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(info["cmd"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # Both healthchecks pass: the image's (port from the environment) and compose's (fixed port).
        subprocess.run(info["healthcheck"], env=env, check=True, timeout=10)
        compose_check = [arg.replace("8000", str(port)) for arg in service["healthcheck"]["test"][1:]]
        subprocess.run(compose_check, env=env, check=True, timeout=10)

        # Publish the example's test pattern to an RTMP server standing in for MediaMTX.
        with NginxRtmp(tmp_path / "nginx") as rtmp:
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "examples" / "live_rtmp.py"),
                    "--url",
                    rtmp.url("demo"),
                    "--server",
                    url,
                    "--seconds",
                    "2",
                    "--width",
                    "320",
                    "--height",
                    "180",
                    "--fps",
                    "25",
                ],
                check=True,
                timeout=60,
                env=env,
            )
            assert rtmp.wait_closed("demo", timeout=10)
            out = decode(str(rtmp.recording("demo")))
        video, audio = sorted(out["streams"], key=lambda s: s["type"] != "video")
        assert video["codec"] == "h264" and (video["width"], video["height"]) == (320, 180)
        assert video["frame_count"] == 50
        assert audio["codec"] == "aac" and abs(audio["sample_count"] - 96000) <= 3 * 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) in (0, -signal.SIGTERM)
        log.close()


# -- scale-out: the compose cluster profile, the Kubernetes manifests, the HAProxy configs -------

K8S = ROOT / "docker" / "kubernetes"
CLUSTER_HAPROXY = ROOT / "docker" / "cluster" / "haproxy.cfg"
ROUTER_HAPROXY = K8S / "router" / "haproxy.cfg"
HAPROXY = "/usr/sbin/haproxy"  # Debian's (scripts/system-deps); /usr/sbin may not be on PATH
#: The Kubernetes release the manifests are validated against (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.32"
REPLICAS = ["framecast-1", "framecast-2", "framecast-3"]
#: HAProxy's section keywords: a line starting with one opens a section.
HAPROXY_SECTIONS = frozenset(
    "global defaults frontend backend listen resolvers peers userlist program http-errors ring cache "
    "mailers log-forward".split()
)


def dotenv() -> dict[str, str]:
    """The committed .env, as compose reads it (KEY=VALUE lines, # comments)."""
    pairs = {}
    for line in (ROOT / ".env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def active_services(config: dict, profiles: list[str]) -> set[str]:
    """The services `up` starts with these profiles (compose spec: a service without profiles
    always; one with profiles when one of them is active)."""
    return {
        name
        for name, service in config["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def haproxy_sections(text: str) -> list[tuple[str, list[str]]]:
    """A HAProxy config's sections: each header line, and its lines without comments and blanks."""
    sections: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.split()[0] in HAPROXY_SECTIONS:
            sections.append((line, []))
        else:
            assert sections, f"a line before any section: {line!r}"
            sections[-1][1].append(line)
    return sections


def routing_lines(text: str) -> list[str]:
    """What routes requests: the frontend and backend sections (headers included), every line
    but comments and the `server` lines (addresses differ between compose and Kubernetes)."""
    lines = []
    for header, body in haproxy_sections(text):
        if header.split()[0] in ("frontend", "backend"):
            lines.append(header)
            lines += [line for line in body if not line.startswith("server ")]
    return lines


def haproxy_servers(text: str) -> dict[str, list[tuple[str, str]]]:
    """Each backend's servers as (name, address)."""
    return {
        header.split()[1]: [(line.split()[1], line.split()[2]) for line in body if line.startswith("server ")]
        for header, body in haproxy_sections(text)
        if header.split()[0] == "backend"
    }


def test_routing_lines_keep_frontends_and_backends_less_server_lines():
    text = """# a comment
global
    maxconn 10
frontend web
    # why
    bind :80
    default_backend app
backend app
    balance leastconn
    server a a:80 check
listen stats
    bind :81
"""
    assert routing_lines(text) == [
        "frontend web",
        "bind :80",
        "default_backend app",
        "backend app",
        "balance leastconn",
    ]
    assert haproxy_servers(text) == {"app": [("a", "a:80")]}


def test_compose_profiles_give_one_server_on_8000_by_default_and_haproxy_with_cluster():
    """`docker compose up` (the committed .env's COMPOSE_PROFILES) starts the single server and
    MediaMTX; `--profile cluster` (which replaces COMPOSE_PROFILES) three replicas, HAProxy and
    MediaMTX. Either way one container publishes :8000, and no host port is published twice."""
    default = dotenv()["COMPOSE_PROFILES"].split(",")
    for flags, profiles, started, on_8000 in (
        ((), default, {"framecast", "mediamtx"}, "framecast"),
        (("--profile", "cluster"), ["cluster"], {*REPLICAS, "haproxy", "mediamtx"}, "haproxy"),
    ):
        config = compose_config(*flags)
        assert active_services(config, profiles) == started
        published = [
            (port["published"], port.get("protocol", "tcp"), name)
            for name in active_services(config, profiles)
            for port in config["services"][name].get("ports", [])
        ]
        assert max(Counter((p, proto) for p, proto, _ in published).values()) == 1, published
        assert [name for port, _, name in published if port == 8000] == [on_8000]
    # The docs at the top of the file give both command lines.
    head = (ROOT / "docker-compose.yml").read_text().split("\nservices:")[0]
    assert "docker compose up" in head and "docker compose --profile cluster up" in head


def test_compose_cluster_profile_runs_three_replicas_behind_haproxy():
    config = compose_config("--profile", "cluster")
    services, single = config["services"], compose_config()["services"]["framecast"]
    routed = haproxy_servers(CLUSTER_HAPROXY.read_text())
    volumes = set()
    for name in REPLICAS:
        replica = services[name]
        env = replica["environment"]
        # The same image and build as the single server; its name is its replica id.
        assert replica["image"] == single["image"] and replica["build"] == single["build"]
        assert replica["profiles"] == ["cluster"] and "ports" not in replica
        assert env["FRAMECAST_REPLICA_ID"] == name and env["FRAMECAST_HOST"] == "0.0.0.0"
        assert env["FRAMECAST_API_KEYS"] == COMPOSE_KEY
        assert [Peer.parse(p) for p in env["FRAMECAST_PEERS"].split(",")] == [
            Peer(f"http://{r}:8000", r) for r in REPLICAS
        ]
        # Its own volume for its server files.
        [volume] = replica["volumes"]
        source, target, _ = volume.split(":")
        assert target == "/data/output" and source in config["volumes"]
        volumes.add(source)
        assert replica["healthcheck"] == single["healthcheck"]
        assert replica["depends_on"] == single["depends_on"]
        grace = re.fullmatch(r"(\d+)s", replica["stop_grace_period"])
        assert grace is not None and int(grace.group(1)) > float(env["FRAMECAST_FINISH_TIMEOUT"])
        # Every setting the replica gets is one the server has (a typo would be ignored silently).
        assert {k.removeprefix("FRAMECAST_").lower() for k in env} <= set(Settings.model_fields), env
        # HAProxy knows it by that name, for new sessions and for its own sessions.
        for backend in ("new_sessions", "replicas"):
            assert (name, f"{name}:8000") in routed[backend], routed[backend]
    assert len(volumes) == len(REPLICAS) and "outputs" not in volumes
    assert {name for servers in routed.values() for name, _ in servers} == set(REPLICAS)

    haproxy = services["haproxy"]
    assert haproxy["image"] == "haproxy:2.6" and haproxy["profiles"] == ["cluster"]
    assert f"{CLUSTER_HAPROXY}:/usr/local/etc/haproxy/haproxy.cfg:ro" in haproxy["volumes"]
    assert [(p["published"], p["target"]) for p in haproxy["ports"]] == [(8000, 8000)]
    assert "profiles" not in services["mediamtx"]


# -- Kubernetes ----------------------------------------------------------------------------------


def kustomize_hash(data: dict[str, str]) -> str:
    """The suffix kustomize gives a generated ConfigMap: the first 10 hex digits of the sha256 of
    its JSON (Go's encoding: sorted keys, <, > and & escaped), with 0 1 3 a e replaced so that no
    word is spelt. kustomize hashes with an empty name (kubectl 1.32's kustomize 5.5 gives the same
    suffixes as this; the tests compare renders without them all the same)."""
    encoded = json.dumps(
        {"data": data, "kind": "ConfigMap", "name": ""}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        encoded = encoded.replace(char, escaped)
    return hashlib.sha256(encoded.encode()).hexdigest()[:10].translate(str.maketrans("013ae", "ghkmt"))


def _rename_config_maps(node: Any, renamed: dict[str, str]) -> None:
    """Point references to generated ConfigMaps (volumes, envFrom, env) at their hashed names."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("configMap", "configMapRef", "configMapKeyRef") and isinstance(value, dict):
                value["name"] = renamed.get(value.get("name", ""), value.get("name"))
            _rename_config_maps(value, renamed)
    elif isinstance(node, list):
        for item in node:
            _rename_config_maps(item, renamed)


def render_kustomization_python(directory: Path) -> list[dict]:
    """`kubectl kustomize` for what docker/kubernetes uses (resources, and configMapGenerator with
    files), where kubectl is missing: Debian has no kubectl package."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {"apiVersion", "kind", "resources", "configMapGenerator"}
    if unknown:
        raise ValueError(f"the pure-Python render does not do {sorted(unknown)}")
    objects = []
    for resource in kustomization["resources"]:
        objects += [doc for doc in yaml.safe_load_all((directory / resource).read_text()) if doc]
    generated, renamed = [], {}
    for generator in kustomization.get("configMapGenerator", []):
        if set(generator) - {"name", "files"}:
            raise ValueError(f"the pure-Python render does not do {sorted(set(generator) - {'name', 'files'})}")
        data = {}
        for entry in generator["files"]:
            key, sep, path = entry.partition("=")
            if not sep:
                key, path = Path(entry).name, entry
            data[key] = (directory / path).read_text()
        renamed[generator["name"]] = name = f"{generator['name']}-{kustomize_hash(data)}"
        generated.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
    _rename_config_maps(objects, renamed)
    return generated + objects


def render_kubectl(directory: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def render_kustomization() -> list[dict]:
    """docker/kubernetes rendered: by kubectl where it is installed, else in Python."""
    return render_kubectl(K8S) if shutil.which("kubectl") else render_kustomization_python(K8S)


def by_kind(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def without_hash_suffix(objects: list[dict]) -> list[dict]:
    """The objects with generated ConfigMaps' names (name-<10 chars>) cut to their base names."""
    generated = {
        obj["metadata"]["name"]: obj["metadata"]["name"][:-11]
        for obj in objects
        if obj["kind"] == "ConfigMap" and re.fullmatch(r".+-[a-z0-9]{10}", obj["metadata"]["name"])
    }
    stripped = copy.deepcopy(objects)
    for obj in stripped:
        if obj["kind"] == "ConfigMap":
            obj["metadata"]["name"] = generated.get(obj["metadata"]["name"], obj["metadata"]["name"])
    _rename_config_maps(stripped, generated)
    return stripped


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (Debian has no package)")
def test_pure_python_render_matches_kubectl_kustomize():
    kubectl, python = render_kubectl(K8S), render_kustomization_python(K8S)
    assert sorted(by_kind(kubectl)) == sorted(by_kind(python))
    # Object for object, once the generated ConfigMap's hash suffix is set aside.
    assert by_kind(without_hash_suffix(kubectl)) == by_kind(without_hash_suffix(python))


def test_pure_python_render_refuses_what_it_does_not_do(tmp_path):
    """A kustomization feature it does not implement is an error, not a render without it."""
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: staging-\n")
    with pytest.raises(ValueError, match="namePrefix"):
        render_kustomization_python(tmp_path)


def test_pure_python_render_generates_the_router_config():
    objects = by_kind(render_kustomization_python(K8S))
    [config] = [obj for (kind, _), obj in objects.items() if kind == "ConfigMap"]
    assert re.fullmatch(r"framecast-router-[a-z0-9]{10}", config["metadata"]["name"])
    assert config["data"] == {"haproxy.cfg": ROUTER_HAPROXY.read_text()}
    volumes = objects["Deployment", "framecast-router"]["spec"]["template"]["spec"]["volumes"]
    assert [v["configMap"]["name"] for v in volumes] == [config["metadata"]["name"]]


def check_httproute(route: dict, objects: dict[tuple[str, str], dict]) -> None:
    """The Gateway API HTTPRoute, checked by hand against the parts of its schema (v1) it uses:
    kubernetes-validate has no schemas for CRDs."""
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["kind"] == "HTTPRoute"
    assert set(route) == {"apiVersion", "kind", "metadata", "spec"}
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", route["metadata"]["name"])
    spec = route["spec"]
    assert set(spec) <= {"parentRefs", "hostnames", "rules"}
    assert spec["parentRefs"], "an HTTPRoute attaches to a Gateway"
    for parent in spec["parentRefs"]:
        assert set(parent) <= {"group", "kind", "namespace", "name", "sectionName", "port"}
        assert parent.get("group", "gateway.networking.k8s.io") == "gateway.networking.k8s.io"
        assert parent.get("kind", "Gateway") == "Gateway" and parent["name"]
    assert 1 <= len(spec["rules"]) <= 16
    for rule in spec["rules"]:
        assert set(rule) <= {"matches", "filters", "backendRefs", "timeouts", "name"}
        for match in rule.get("matches", []):
            assert set(match) <= {"path", "headers", "queryParams", "method"}
            assert match["path"]["type"] in ("Exact", "PathPrefix", "RegularExpression")
            assert match["path"]["value"].startswith("/")
        for ref in rule["backendRefs"]:
            assert set(ref) <= {"group", "kind", "name", "namespace", "port", "weight", "filters"}
            assert ref.get("kind", "Service") == "Service" and "namespace" not in ref
            # It points at a Service of this kustomization, on a port that Service has.
            service = objects["Service", ref["name"]]
            assert ref["port"] in [port["port"] for port in service["spec"]["ports"]]


RENDERS = [
    pytest.param(
        render_kubectl,
        id="kubectl",
        marks=pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
    ),
    pytest.param(render_kustomization_python, id="python"),
]


@pytest.mark.parametrize("render", RENDERS)
def test_kubernetes_objects_pass_strict_schema_validation(render):
    objects = render(K8S)
    assert sorted(by_kind(without_hash_suffix(objects))) == [
        ("ConfigMap", "framecast-router"),
        ("Deployment", "framecast-router"),
        ("HTTPRoute", "framecast"),
        ("PodDisruptionBudget", "framecast"),
        ("PodDisruptionBudget", "framecast-router"),
        ("Service", "framecast"),
        ("Service", "framecast-router"),
        ("StatefulSet", "framecast"),
    ]
    for obj in objects:
        if obj["kind"] == "HTTPRoute":
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # else: validate it like the rest
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            check_httproute(obj, by_kind(objects))
        else:
            assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION
    # Strict means strict: a field the schema does not have fails.
    wrong = copy.deepcopy(by_kind(objects)["StatefulSet", "framecast"])
    wrong["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validate_cli_passes_the_rendered_manifests(tmp_path):
    """The same with the command-line tool, as an operator would run it on the rendered output."""
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(render_kustomization()))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert sum(line.startswith("INFO") and "passed" in line for line in lines) == 7, out.stdout
    # The one object it cannot check is the CRD (checked by hand above).
    assert [line for line in lines if not line.startswith("INFO")] == [
        f"WARN {rendered} Couldn't find schema for kind HTTPRoute with api version gateway.networking.k8s.io/v1 "
        f"for kubernetes version {KUBERNETES_VERSION}"
    ]


def container_env(container: dict) -> dict[str, Any]:
    """A container's env as name -> value, or -> valueFrom where it comes from elsewhere."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_statefulset_runs_replicas_that_drain_and_keep_their_names():
    objects = by_kind(render_kustomization())
    sts = objects["StatefulSet", "framecast"]
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = container_env(container)
    replicas = [f"framecast-{i}" for i in range(spec["replicas"])]
    assert spec["replicas"] == 3 and spec["updateStrategy"]["type"] == "RollingUpdate"
    assert spec["podManagementPolicy"] in ("Parallel", "OrderedReady")
    assert spec["selector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()

    # The headless Service gives each pod its DNS name, ready or not (full, draining).
    service = objects["Service", spec["serviceName"]]["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert service["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()

    # Replica ids are the pod names; the peers are every pod by its DNS name.
    assert env["FRAMECAST_REPLICA_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert [Peer.parse(p) for p in env["FRAMECAST_PEERS"].split(",")] == [
        Peer(f"http://{r}.{spec['serviceName']}:8000", r) for r in replicas
    ]
    # Keys from the Secret, never inline; the preStop's CLI sends the admin key.
    for name in ("FRAMECAST_API_KEYS", "FRAMECAST_ADMIN_KEYS", "FRAMECAST_API_KEY"):
        assert env[name]["secretKeyRef"]["name"] == "framecast-api-keys", name
    assert env["FRAMECAST_API_KEY"] == env["FRAMECAST_ADMIN_KEYS"]
    assert {k.removeprefix("FRAMECAST_").lower() for k in env} - {"api_key"} <= set(Settings.model_fields), env
    # The server's own validation accepts this environment (with made-up keys and a pod name).
    values = {k.removeprefix("FRAMECAST_").lower(): v for k, v in env.items() if isinstance(v, str)}
    settings = Settings.model_validate({**values, "replica_id": "framecast-1", "api_keys": "k1,k2", "admin_keys": "a1"})
    assert [p.replica for p in settings.peer_list] == replicas

    # Probes, the drain before SIGTERM, and a grace period that outlasts drain and finish.
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == [
        "framecast",
        "drain",
        "--server",
        "http://127.0.0.1:8000",
        "--wait",
    ]
    assert pod["terminationGracePeriodSeconds"] > settings.drain_timeout + settings.finish_timeout
    assert pod["enableServiceLinks"] is False

    # The image's user, a read-only root with /tmp writable, one volume per replica for the outputs.
    info = dockerfile()
    uid = re.search(r"useradd [^\n]*--uid (\d+)", (ROOT / "docker" / "Dockerfile").read_text())
    assert uid is not None and info["user"] == "framecast"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == int(uid.group(1))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert info["env"]["FRAMECAST_OUTPUT_DIR"] == env["FRAMECAST_OUTPUT_DIR"] == "/data/output"
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == [mounts["/data/output"]]
    assert {"name": mounts["/tmp"], "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    assert container["resources"]["requests"] and container["resources"]["limits"]

    # At most one replica evicted at a time.
    pdb = objects["PodDisruptionBudget", "framecast"]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_router_runs_haproxy_with_the_generated_config_and_routes_to_every_replica():
    objects = by_kind(render_kustomization())
    router = objects["Deployment", "framecast-router"]
    pod = router["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert router["spec"]["replicas"] == 2 and container["image"] == "haproxy:2.6"
    [mount] = container["volumeMounts"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config = objects["ConfigMap", volume["configMap"]["name"]]
    assert mount["mountPath"] == "/usr/local/etc/haproxy/haproxy.cfg" and mount["subPath"] == "haproxy.cfg"
    assert config["data"]["haproxy.cfg"] == ROUTER_HAPROXY.read_text()
    assert container_env(container)["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    labels = router["spec"]["template"]["metadata"]["labels"]
    service = objects["Service", "framecast-router"]["spec"]
    assert service["type"] == "ClusterIP" and service["selector"].items() <= labels.items()
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(8000, "http")]
    pdb = objects["PodDisruptionBudget", "framecast-router"]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"].items() <= labels.items()
    route = objects["HTTPRoute", "framecast"]["spec"]
    assert [ref["name"] for rule in route["rules"] for ref in rule["backendRefs"]] == ["framecast-router"]

    # Each backend has one server per replica, named by its id, at that pod's DNS name.
    sts = objects["StatefulSet", "framecast"]["spec"]
    replicas = [f"framecast-{i}" for i in range(sts["replicas"])]
    for backend, servers in haproxy_servers(ROUTER_HAPROXY.read_text()).items():
        assert [name for name, _ in servers] == replicas, backend
        for name, address in servers:
            assert address == f'"{name}.{sts["serviceName"]}.${{POD_NAMESPACE}}.svc.${{CLUSTER_DOMAIN}}:8000"'


@pytest.mark.parametrize("config", [CLUSTER_HAPROXY, ROUTER_HAPROXY], ids=["compose", "kubernetes"])
def test_haproxy_accepts_the_config(config):
    """haproxy -c parses the whole file; names that do not resolve here are warnings (init-addr none)."""
    env = {**os.environ, "POD_NAMESPACE": "media"}
    out = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Configuration file is valid" in out.stdout
    if config == ROUTER_HAPROXY:
        # The pod's namespace and the default cluster domain make the servers' names.
        assert "'framecast-0.framecast.media.svc.cluster.local'" in out.stderr


def test_compose_and_kubernetes_route_alike():
    """docker/cluster/haproxy.cfg and docker/kubernetes/router/haproxy.cfg: the same frontend and
    backends, line for line, but the server addresses; resolvers differ (Docker's DNS, the pod's)."""
    compose, kubernetes = CLUSTER_HAPROXY.read_text(), ROUTER_HAPROXY.read_text()
    assert routing_lines(compose) == routing_lines(kubernetes)
    assert "option httpchk GET /readyz" in routing_lines(kubernetes)
    assert [len(servers) for servers in haproxy_servers(compose).values()] == [3, 3]
    # Every server line resolves at run time with its file's resolvers section.
    for text, resolvers in ((compose, "docker"), (kubernetes, "kube")):
        sections = dict(haproxy_sections(text))
        assert f"resolvers {resolvers}" in sections
        for line in [line for _, body in haproxy_sections(text) for line in body if line.startswith("server ")]:
            assert line.endswith(f"check resolvers {resolvers} init-addr last,libc,none"), line
    assert "parse-resolv-conf" in dict(haproxy_sections(kubernetes))["resolvers kube"]
