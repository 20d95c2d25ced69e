"""deploy/k8s is checked offline: rendered as kustomize renders it, validated against Kubernetes' JSON schemas, and
every container's command parsed by the real CLI.

``render`` implements the few kustomize features the manifests use (resources, components, JSON 6902 patches) and
refuses any other, so the tests need no kustomize binary; where ``kustomize`` or ``kubectl`` is installed, one
test checks that it renders the same objects.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import Settings
from mtl_tune_cli.main import app
from storage._engine import engine_kwargs

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = {
    "base": K8S / "base",
    "with-postgres": K8S / "overlays" / "with-postgres",
    "cpu": K8S / "overlays" / "cpu",
    "cpu-with-postgres": K8S / "overlays" / "cpu-with-postgres",
}
GPU = "nvidia.com/gpu"
# Manifests are validated against this oldest release and the newest whose schemas kubernetes-validate bundles.
OLDEST_KUBERNETES = "1.28"

Manifest = dict[str, Any]


# --- a kustomize subset -------------------------------------------------------------------------------------------

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "components", "patches"}
TARGET_KEYS = {"group", "version", "kind", "name"}


def render(directory: Path) -> list[Manifest]:
    """The objects ``kustomize build directory`` outputs, for the features deploy/k8s uses."""
    kustomization = _kustomization(directory, kind="Kustomization")
    objects: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        objects += _resources(directory / entry)
    for entry in kustomization.get("components", []):
        component = directory / entry
        spec = _kustomization(component, kind="Component")
        for resource in spec.get("resources", []):
            objects += _resources(component / resource)
        _patch(component, spec, objects)
    _patch(directory, kustomization, objects)
    ids = [_id(o) for o in objects]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, f"{directory}: objects defined twice: {duplicates}"
    return objects


def _kustomization(directory: Path, *, kind: str) -> Manifest:
    spec: Manifest = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert spec.get("kind", "Kustomization") == kind, f"{directory} is a {spec.get('kind')}, listed as a {kind}"
    unsupported = set(spec) - KUSTOMIZATION_KEYS
    assert not unsupported, f"{directory}: {unsupported} are not rendered by these tests; extend render()"
    return spec


def _resources(path: Path) -> list[Manifest]:
    if path.is_dir():
        return render(path)
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _patch(directory: Path, spec: Manifest, objects: list[Manifest]) -> None:
    for patch in spec.get("patches", []):
        assert set(patch) == {"path", "target"}, f"{directory}: only JSON 6902 patches from a file with a target"
        target = patch["target"]
        assert set(target) <= TARGET_KEYS, f"{directory}: target selector {set(target) - TARGET_KEYS}"
        operations = yaml.safe_load((directory / patch["path"]).read_text())
        assert isinstance(operations, list), f"{directory / patch['path']}: not a JSON 6902 patch (a list of ops)"
        matched = [o for o in objects if _selected(o, target)]
        assert matched, f"{directory}: patch {patch['path']} matches no object"
        for obj in matched:
            for op in operations:
                _apply(obj, op)


def _selected(obj: Manifest, target: Manifest) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    actual = {"group": group, "version": version, "kind": obj["kind"], "name": obj["metadata"]["name"]}
    return all(actual[key] == value for key, value in target.items())


def _apply(obj: Manifest, op: Manifest) -> None:
    """One RFC 6902 operation (add, remove, replace): kustomize fails on a path that does not exist, so does this."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: int | str = int(last) if isinstance(node, list) and last != "-" else last
    if op["op"] == "remove":
        del node[key]
    elif op["op"] == "replace":
        exists = key in node if isinstance(node, dict) else isinstance(key, int) and 0 <= key < len(node)
        assert exists, f"replace: {op['path']} does not exist"
        node[key] = op["value"]
    elif op["op"] == "add" and isinstance(node, list):
        node.insert(len(node) if key == "-" else int(key), op["value"])
    elif op["op"] == "add":
        node[key] = op["value"]
    else:
        raise AssertionError(f"unsupported patch operation {op['op']!r}")


def _id(obj: Manifest) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


# --- helpers ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=list(OVERLAYS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    return request.param, render(OVERLAYS[request.param])


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} objects"
    return matches[0]


def pod_spec(obj: Manifest) -> Manifest:
    spec: Manifest = obj["spec"]["template"]["spec"]
    return spec


def pod_spec_labels(obj: Manifest) -> dict[str, str]:
    labels: dict[str, str] = obj["spec"]["template"]["metadata"]["labels"]
    return labels


def containers(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    for obj in objects:
        if "template" in obj.get("spec", {}):
            for container in pod_spec(obj)["containers"]:
                yield obj, container


def mtl_tune_containers(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    for obj, container in containers(objects):
        if container.get("command") == ["mtl-tune"]:
            yield obj, container


def cli_context(argv: list[str]) -> Any:
    """The CLI's own parse of ``mtl-tune ARGV``: subcommands resolved, every option converted and range-checked (an
    unknown command or option, a bad value, raises), nothing run."""
    command: Any = typer.main.get_command(app)
    words, name = list(argv), "mtl-tune"
    context = command.make_context(name, words)
    while hasattr(command, "resolve_command"):
        name, command, words = command.resolve_command(context, words)
        context = command.make_context(name, words, parent=context)
    return context


def env_names_read_by(context: Any) -> set[str]:
    """The environment variables the parsed command reads: its options' and, for ``serve``, the API's settings."""
    names = {p.envvar for p in context.command.params if isinstance(p.envvar, str)}
    if context.command_path == "mtl-tune serve":
        prefix = Settings.model_config.get("env_prefix", "")
        names |= {f"{prefix}{field}".upper() for field in Settings.model_fields}
    return names


def secret_refs(objects: list[Manifest]) -> set[tuple[str, str]]:
    return {
        (env["valueFrom"]["secretKeyRef"]["name"], env["valueFrom"]["secretKeyRef"]["key"])
        for _, container in containers(objects)
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }


def kubernetes_section() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"\*\*On Kubernetes\*\*.*?(?=\n\*\*Without Docker\*\*)", text, flags=re.S)
    assert match, "README has no Kubernetes section before 'Without Docker'"
    return match.group(0)


# --- rendering and schemas ----------------------------------------------------------------------------------------


def test_every_manifest_file_is_listed_by_its_kustomization() -> None:
    """A YAML file no kustomization lists would never be applied."""
    for kustomization in K8S.rglob("kustomization.yaml"):
        listed = yaml.safe_load(kustomization.read_text())
        named = {*listed.get("resources", []), *(p["path"] for p in listed.get("patches", []))}
        for path in kustomization.parent.glob("*.yaml"):
            assert path.name == "kustomization.yaml" or path.name in named, f"{path} is not in {kustomization}"


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.latest_version()])
def test_every_object_is_valid_against_the_kubernetes_schema(
    rendered: tuple[str, list[Manifest]], version: str
) -> None:
    """Strict: an unknown or misspelt field fails too, not only a wrong type or a missing required one."""
    _, objects = rendered
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:  # its text would print the whole schema
            where = "/".join(str(p) for p in exc.absolute_path) or "/"
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} at {where}: {exc.message}")
    assert not errors, errors


def test_the_schema_check_catches_a_misspelt_field() -> None:
    worker = copy.deepcopy(find(render(OVERLAYS["base"]), "Deployment", "mtl-tune-worker"))
    pod_spec(worker)["terminationGracePeriod"] = pod_spec(worker).pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriod"):
        kubernetes_validate.validate(worker, OLDEST_KUBERNETES, strict=True)


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_kustomize_renders_the_same_objects(overlay: str) -> None:
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(OVERLAYS[overlay])]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(OVERLAYS[overlay])]
    else:
        pytest.skip("neither kustomize nor kubectl is installed")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = {_id(o): o for o in yaml.safe_load_all(out.stdout) if o}
    ours = {_id(o): o for o in render(OVERLAYS[overlay])}
    assert ours == theirs


def test_selectors_and_ports_line_up(rendered: tuple[str, list[Manifest]]) -> None:
    """What the schemas cannot see: each workload selects its own pods, each Service reaches a named port."""
    _, objects = rendered
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    for obj in workloads:
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items(), obj["metadata"]["name"]
    for service in (o for o in objects if o["kind"] == "Service"):
        backends = [o for o in workloads if service["spec"]["selector"].items() <= pod_spec_labels(o).items()]
        assert len(backends) == 1, service["metadata"]["name"]
        ports = {p["name"]: p["containerPort"] for c in pod_spec(backends[0])["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)
    for statefulset in (o for o in objects if o["kind"] == "StatefulSet"):
        find(objects, "Service", statefulset["spec"]["serviceName"])


# --- commands, environment, secrets -------------------------------------------------------------------------------


def test_each_container_runs_a_real_cli_command(rendered: tuple[str, list[Manifest]]) -> None:
    _, objects = rendered
    commands = {}
    for obj, container in mtl_tune_containers(objects):
        context = cli_context(container["args"])
        commands[obj["metadata"]["name"]] = context.command_path
        read = env_names_read_by(context)
        for env in container.get("env", []):
            assert env["name"] in read, f"{obj['metadata']['name']}: `{context.command_path}` never reads {env['name']}"
    assert commands == {
        "mtl-tune-migrate": "mtl-tune db upgrade",
        "mtl-tune-api": "mtl-tune serve",
        "mtl-tune-worker": "mtl-tune worker",
    }


def test_the_cli_parse_refuses_what_the_cli_refuses() -> None:
    with pytest.raises(Exception, match="--devise"):
        cli_context(["worker", "--devise", "cpu"])
    with pytest.raises(Exception, match="greater than or equal to 0"):
        cli_context(["serve", "--workers", "-1"])


def test_the_api_binds_all_interfaces_without_local_workers() -> None:
    objects = render(OVERLAYS["base"])
    api = pod_spec(find(objects, "Deployment", "mtl-tune-api"))["containers"][0]
    params = cli_context(api["args"]).params
    assert params["host"] == "0.0.0.0" and params["workers"] == 0
    assert api["ports"][0]["containerPort"] == params["port"]


def test_every_container_gets_its_storage_url_and_token_from_secrets_only(rendered: tuple[str, list[Manifest]]) -> None:
    _, objects = rendered
    assert not [o for o in objects if o["kind"] in ("Secret", "ConfigMap")], "secrets are created by the operator"
    for _, container in mtl_tune_containers(objects):
        context = cli_context(container["args"])
        storage_env = next(p.envvar for p in context.command.params if p.name == "storage_url")
        env = {e["name"]: e for e in container["env"]}
        assert env[storage_env]["valueFrom"]["secretKeyRef"] == {"name": "mtl-tune-storage", "key": "url"}
        assert context.params["storage_url"] is None, "the URL, password included, would show in `ps`"
        assert not any("://" in arg for arg in container["args"])
        if context.command_path == "mtl-tune serve":
            assert "secretKeyRef" in env["MTL_TUNE_API_TOKEN"]["valueFrom"]
    for _, container in containers(objects):
        for env in container.get("env", []):
            if re.search(r"PASSWORD|TOKEN|STORAGE|SECRET", env["name"]):
                assert "value" not in env and "secretKeyRef" in env["valueFrom"], env["name"]


def test_the_api_reads_its_token_from_the_variable_the_manifest_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    api = pod_spec(find(render(OVERLAYS["base"]), "Deployment", "mtl-tune-api"))["containers"][0]
    token_env = next(e["name"] for e in api["env"] if e["valueFrom"]["secretKeyRef"]["name"] == "mtl-tune-api-token")
    monkeypatch.setenv(token_env, "from-the-secret")
    token = Settings(storage="sqlite://").api_token
    assert token is not None and token.get_secret_value() == "from-the-secret"


def test_the_probes_call_the_real_health_route(tmp_path: Path) -> None:
    api = pod_spec(find(render(OVERLAYS["base"]), "Deployment", "mtl-tune-api"))["containers"][0]
    probes = [api[p] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    paths = {p["httpGet"]["path"] for p in probes}
    assert {p["httpGet"]["port"] for p in probes} == {api["ports"][0]["name"]}
    # A health check against an unreachable database waits for the connect timeout, then answers "degraded":
    # liveness must not restart the API for that.
    connect_timeout = engine_kwargs("postgresql+psycopg://mtl@db/mtl_tune")["connect_args"]["connect_timeout"]
    assert api["livenessProbe"]["timeoutSeconds"] > connect_timeout
    client = TestClient(create_app(Settings(storage=f"sqlite:///{tmp_path / 'health.db'}")))
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200 and "storage" in response.json(), path


def test_every_secret_the_manifests_read_is_created_in_the_readme() -> None:
    section = kubernetes_section()
    refs = set().union(*(secret_refs(render(path)) for path in OVERLAYS.values()))
    assert {name for name, _ in refs} == {"mtl-tune-storage", "mtl-tune-api-token", "mtl-tune-postgres"}
    for name, key in refs:
        assert re.search(rf"kubectl create secret generic {name} --from-literal={key}=", section), (name, key)


def test_the_readme_url_for_the_in_cluster_database_matches_the_statefulset() -> None:
    objects = render(OVERLAYS["with-postgres"])
    postgres = pod_spec(find(objects, "StatefulSet", "mtl-tune-postgres"))["containers"][0]
    env = {e["name"]: e for e in postgres["env"]}
    service = find(objects, "Service", "mtl-tune-postgres")
    url = re.search(r"postgresql\+psycopg://(\w+):\$PW@([\w-]+):(\d+)/(\w+)", kubernetes_section())
    assert url, "README gives no URL for the in-cluster database"
    user, host, port, database = url.groups()
    assert (user, database) == (env["POSTGRES_USER"]["value"], env["POSTGRES_DB"]["value"])
    assert host == service["metadata"]["name"] and int(port) == service["spec"]["ports"][0]["port"]
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mtl-tune-postgres", "key": "password"}
    claims = find(objects, "StatefulSet", "mtl-tune-postgres")["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in postgres["volumeMounts"]}
    assert env["PGDATA"]["value"].startswith(mounts[claims[0]["metadata"]["name"]] + "/")


# --- the migration, the workers, GPUs -----------------------------------------------------------------------------


def test_the_migration_job_runs_once_with_the_api_image() -> None:
    objects = render(OVERLAYS["base"])
    job = find(objects, "Job", "mtl-tune-migrate")
    api = pod_spec(find(objects, "Deployment", "mtl-tune-api"))["containers"][0]
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")
    assert pod_spec(job)["containers"][0]["image"] == api["image"]
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # gone before the next apply of a new image, which reruns it


def test_gpu_overlays_give_each_worker_one_gpu_and_cpu_overlays_none() -> None:
    for overlay, path in OVERLAYS.items():
        objects = render(path)
        worker = pod_spec(find(objects, "Deployment", "mtl-tune-worker"))["containers"][0]
        params = cli_context(worker["args"]).params
        if overlay.startswith("cpu"):
            assert GPU not in json.dumps(objects), overlay
            assert params["device"] == "cpu"
            assert params["threads"] is not None and params["threads"] <= int(worker["resources"]["requests"]["cpu"])
            api = pod_spec(find(objects, "Deployment", "mtl-tune-api"))["containers"][0]
            assert worker["image"] == api["image"], "the CPU build of torch"
        else:
            assert int(worker["resources"]["limits"][GPU]) == 1, overlay
            assert params["device"].startswith("cuda")
        # Nothing else asks for a GPU: the API, the migration and the database never train.
        others = [c for o, c in containers(objects) if o["metadata"]["name"] != "mtl-tune-worker"]
        assert all(GPU not in json.dumps(c.get("resources", {})) for c in others)


def test_workers_scale_and_roll_out_without_a_spare_gpu() -> None:
    worker = find(render(OVERLAYS["base"]), "Deployment", "mtl-tune-worker")
    assert worker["spec"]["replicas"] >= 1
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert not any("ports" in c for c in pod_spec(worker)["containers"])


def test_worker_grace_period_covers_its_slowest_clean_shutdown() -> None:
    """On SIGTERM the worker tells Optuna the trial failed and releases its claim: two transactions that may each
    open a new connection (the engine's connect timeout), then joins its heartbeat thread (5 s at most). A training
    step and the process's exit come on top: the grace period is twice that bound. The shutdown itself (a couple of
    seconds) is tested with a real worker in tests/study/test_stop_and_signals.py."""
    grace = pod_spec(find(render(OVERLAYS["base"]), "Deployment", "mtl-tune-worker"))["terminationGracePeriodSeconds"]
    connect_timeout = engine_kwargs("postgresql+psycopg://mtl@db/mtl_tune")["connect_args"]["connect_timeout"]
    heartbeat_join = 5
    assert grace >= 2 * (2 * connect_timeout + heartbeat_join) > 30  # twice the bound, above Kubernetes' default
