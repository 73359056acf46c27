"""The deployment files (infra/, prefect.yaml) agree with the code: images, env vars, entry points, pools."""
from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from oldphoto.distributed.config import (FLOW_ENTRYPOINTS, IMAGE_REPOSITORY, OPTIONAL_ENV, WORK_POOL, WORKER_ENV,
                                         DistributedConfig, image)

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    docs = {}
    for f in sorted((INFRA / "k8s").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                docs[f"{d['kind']}/{d['metadata']['name']}"] = d
    return docs


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def _pyproject_pin(name: str) -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for d in deps:
        m = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==(\S+)", d)
        if m:
            return m.group(2)
    raise AssertionError(f"{name} not pinned in pyproject.toml")


def _command(svc: dict) -> list[str]:
    """The command's words (a `sh -c "..."` script split too)."""
    cmd = svc.get("command", [])
    return [w for part in (cmd if isinstance(cmd, list) else [cmd]) for w in part.split()]


def _opt(cmd: list[str], name: str) -> str:
    for i, c in enumerate(cmd):
        if c.startswith(f"{name}="):
            return c.split("=", 1)[1]
        if c == name:
            return cmd[i + 1]
    raise AssertionError(f"{name} not in {cmd}")


def test_dockerfile_variants_and_entrypoint():
    text = (INFRA / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    names = {alias for _, alias in stages if alias}
    assert {"base-cpu", "base-cuda", "runtime"} <= names
    assert ("base-${VARIANT}", "runtime") in stages
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    assert "python:3.11" in text and "python3.11" in text      # pyproject: requires-python 3.11
    assert f'"torch=={_pyproject_pin("torch")}"' in text
    assert "whl/cpu" in text and "whl/cu128" in text
    for src in re.findall(r"^COPY\s+(.+)\s+\S+$", text, re.M):
        for part in src.split():
            assert (REPO / part).exists(), f"Dockerfile copies {part}, which is not in the repository"
    cmd = re.search(r"^CMD\s+(\[.*\])$", text, re.M).group(1)
    cmd = yaml.safe_load(cmd)
    assert cmd[:3] == ["prefect", "worker", "start"] and _opt(cmd, "--pool") == WORK_POOL
    assert "oldphoto.flows.restore_archive" in text            # the image build imports the flows
    assert (INFRA / "Dockerfile.dockerignore").read_text().count(".venv") == 1


def test_compose_agrees_with_code(compose, prefect_yaml):
    import prefect
    import ray

    svcs = compose["services"]
    assert {"postgres", "s3", "prefect-server", "ray-head", "ray-worker", "prefect-worker"} <= set(svcs)
    for name in ("ray-head", "ray-worker", "prefect-worker"):
        assert svcs[name]["image"] == image("cpu")
        assert svcs[name]["build"]["args"]["VARIANT"] == "cpu"
        assert svcs[name]["build"]["dockerfile"] == "infra/Dockerfile"
    gpu = svcs["ray-gpu-worker"]
    assert gpu["image"] == image("cuda") and gpu["build"]["args"]["VARIANT"] == "cuda"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert svcs["prefect-server"]["image"].startswith(f"prefecthq/prefect:{prefect.__version__}-python3.11")

    env = svcs["prefect-worker"]["environment"]
    assert set(WORKER_ENV) | set(OPTIONAL_ENV) <= set(env)
    # RAY_ADDRESS points at the head's GCS port; PREFECT_API_URL at the server's port
    head_port = _opt(_command(svcs["ray-head"]), "--port")
    assert env["RAY_ADDRESS"] == f"ray-head:{head_port}"
    assert _opt(_command(svcs["ray-worker"]), "--address") == f"ray-head:{head_port}"
    server_port = _opt(_command(svcs["prefect-server"]), "--port")
    assert env["PREFECT_API_URL"] == f"http://prefect-server:{server_port}/api"
    assert env["AWS_ENDPOINT_URL"] == "http://s3:9000" and "9000:9000" in svcs["s3"]["ports"]
    # token authentication on every node and driver, with the one token the operator sets
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")
    # the Prefect worker (where flow runs, i.e. Ray drivers, run) joins the cluster before serving the pool
    wcmd = _command(svcs["prefect-worker"])
    assert wcmd[wcmd.index("ray"):wcmd.index("ray") + 2] == ["ray", "start"]
    assert _opt(wcmd, "--address") == f"ray-head:{head_port}" and wcmd.index("ray") < wcmd.index("prefect")
    # the catalog database exists and its URL is one the catalog accepts
    from oldphoto.catalog.store import Catalog

    db = env["OLDPHOTO_CATALOG"].rsplit("/", 1)[1]
    assert re.search(rf"CREATE DATABASE {db}\b", (INFRA / "postgres-init.sql").read_text())
    assert Catalog(env["OLDPHOTO_CATALOG"]).dialect == "postgresql"
    # the worker serves the pool the deployments use; the deploy helper creates that pool
    assert _opt(_command(svcs["prefect-worker"]), "--pool") == WORK_POOL
    assert f"work-pool create {WORK_POOL} --type process" in " ".join(_command(svcs["deploy"]))
    # the buckets the nightly deployment reads/writes are created
    nightly = next(d for d in prefect_yaml["deployments"] if d["name"] == "nightly")
    mb = " ".join(_command(svcs["create-buckets"]))
    for key in ("source", "destination"):
        bucket = nightly["parameters"][key].split("://", 1)[1].split("/", 1)[0]
        assert f"local/{bucket}" in mb
    assert ray.__version__ == _pyproject_pin("ray")


def test_k8s_raycluster_and_worker(k8s):
    import ray

    rc = k8s["RayCluster/oldphoto"]
    assert rc["apiVersion"] == "ray.io/v1" and rc["spec"]["rayVersion"] == ray.__version__
    head = rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == image("cpu")
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    g = groups["gpu"]
    c = g["template"]["spec"]["containers"][0]
    assert c["image"] == image("cuda")
    gpus = int(g["rayStartParams"]["num-gpus"])
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == gpus >= 1
    # the three model pools of the cluster config fit on one worker's GPUs
    cfg = DistributedConfig.gpu_cluster()
    assert 0 < sum(cfg.pool(p).num_gpus for p in ("scratch", "global", "face")) <= gpus

    dep = k8s["Deployment/oldphoto-prefect-worker"]
    wc = dep["spec"]["template"]["spec"]["containers"][0]
    assert wc["image"] == image("cpu") and wc["workingDir"] == "/opt/oldphoto"
    wcmd = _command(wc)
    assert wcmd[wcmd.index("prefect"):wcmd.index("prefect") + 3] == ["prefect", "worker", "start"]
    assert _opt(wcmd, "--pool") == WORK_POOL and "--address=$RAY_ADDRESS" in wcmd   # joins the Ray cluster first
    # every secret and volume claim referenced is defined, and every Ray node and driver uses the token
    defined = {k.split("/", 1)[1] for k in k8s if k.startswith("Secret/")}
    claims = {k.split("/", 1)[1] for k in k8s if k.startswith("PersistentVolumeClaim/")}
    text = yaml.safe_dump(list(k8s.values()))
    assert set(re.findall(r"secretRef:\s*\{?\s*name: ([\w-]+)", text)) <= defined
    assert set(re.findall(r"secretKeyRef:\s*\{?\s*key: \w+,?\s*name: ([\w-]+)", text)) <= defined
    assert set(re.findall(r"claimName: ([\w-]+)", text)) <= claims and claims
    for c in [head, c, wc]:
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "oldphoto-ray-token"
    cm = k8s["ConfigMap/oldphoto-config"]["data"]
    secrets = {e["secretRef"]["name"] for e in wc["envFrom"] if "secretRef" in e}
    assert {"oldphoto-s3", "oldphoto-catalog"} <= secrets
    provided = set(cm) | {"OLDPHOTO_CATALOG"}                  # OLDPHOTO_CATALOG comes from its secret
    assert set(WORKER_ENV) <= provided
    # KubeRay names the head service <cluster>-head-svc
    host, port = cm["RAY_ADDRESS"].split(":")
    assert host == f"{rc['metadata']['name']}-head-svc" and port == "6379"


def test_dockerfile_workdir_matches_deployments():
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^WORKDIR /opt/oldphoto$", text, re.M)
    assert re.search(r"^COPY prefect.yaml \./$", text, re.M)
    assert image("cpu").startswith(IMAGE_REPOSITORY)


def test_prefect_yaml_entrypoints_import(prefect_yaml):
    from prefect import Flow
    from prefect.schedules import Cron

    deps = prefect_yaml["deployments"]
    seen = set()
    for d in deps:
        # a module path (package.module.flow), imported from the installed package: no file path, no checkout
        assert ":" not in d["entrypoint"] and "/" not in d["entrypoint"]
        module, attr = d["entrypoint"].rsplit(".", 1)
        fl = getattr(importlib.import_module(module), attr)
        assert isinstance(fl, Flow)
        assert FLOW_ENTRYPOINTS[fl.name] == d["entrypoint"]
        seen.add(f"{fl.name}/{d['name']}")
        assert d["work_pool"]["name"] == WORK_POOL
        params = set(inspect.signature(fl.fn).parameters)
        assert set(d.get("parameters") or {}) <= params, f"{d['name']}: unknown parameters"
        for s in d.get("schedules") or []:
            Cron(s["cron"], timezone=s.get("timezone"))        # a valid cron expression
    assert {"restore-archive/nightly", "restore-archive/on-demand", "reprocess-failed/on-demand"} <= seen
    # no checkout path: the one pull step keeps the run in the folder the worker makes for it
    assert prefect_yaml["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "."}}]
    assert all("pull" not in d for d in deps)
    nightly = next(d for d in deps if d["name"] == "nightly")
    assert nightly["schedules"][0]["cron"] and nightly["schedules"][0]["active"]
    wanted = {"source", "destination", "catalog", "scratch", "tone_match", "tile", "colour", "options", "limit", "reprocess_failed", "ray_address", "weights"}
    flow = importlib.import_module("oldphoto.flows.restore_archive").restore_archive
    assert wanted <= set(inspect.signature(flow.fn).parameters)
