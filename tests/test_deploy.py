"""Kubernetes manifests under deploy/: every kustomization renders with `kubectl kustomize`,
every built-in object validates against the Kubernetes schemas of a pinned version, the
custom resources carry what their operators need, and the pieces fit together
(selectors, ports, probes, security, GPU scheduling, the training jobs' resume)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
# The oldest Kubernetes the manifests promise to run on (HPA autoscaling/v2, PDB
# policy/v1 and everything else used here are GA there); schemas from kubernetes-validate.
K8S_VERSION = "1.30"
KUSTOMIZATIONS = sorted(p.parent.relative_to(DEPLOY).as_posix()
                        for p in DEPLOY.rglob("kustomization.yaml"))
SERVICE_OVERLAYS = ("overlays/cpu", "overlays/gpu")
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"),
                ("monitoring.coreos.com/v1", "PrometheusRule"),
                ("kubeflow.org/v1", "PyTorchJob"),
                ("serving.kserve.io/v1beta1", "InferenceService")}
KSERVE_OVERLAYS = ("kserve/cpu", "kserve/gpu")
# Fields of KServe's PredictorSpec that are not the PodSpec it inlines (ComponentExtensionSpec
# and the framework/model specs, as of KServe 0.11-0.15).
KSERVE_EXTENSION_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric",
                           "containerConcurrency", "timeout", "canaryTrafficPercent", "logger",
                           "batcher", "labels", "annotations", "deploymentStrategy", "model",
                           "workerSpec"}


def _kubectl_problem() -> str | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return ("kubectl is not installed, so the kustomizations cannot be rendered "
                "(install kubectl >= 1.27, whose built-in kustomize is v5)")
    try:
        out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                             text=True, timeout=30).stdout
        kustomize = json.loads(out).get("kustomizeVersion", "")
    except (subprocess.SubprocessError, json.JSONDecodeError):
        return "kubectl does not report its version"
    if not re.match(r"v(5|[6-9])\.", kustomize):
        return f"kubectl's built-in kustomize is {kustomize or 'unknown'}; these manifests need v5"
    return None


KUBECTL_PROBLEM = _kubectl_problem()
needs_kubectl = pytest.mark.skipif(KUBECTL_PROBLEM is not None, reason=KUBECTL_PROBLEM or "")

_rendered: dict[str, list[dict]] = {}


def render(path: str) -> list[dict]:
    if path not in _rendered:
        result = subprocess.run(["kubectl", "kustomize", str(DEPLOY / path)], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, f"kubectl kustomize {path}:\n{result.stderr}"
        _rendered[path] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return _rendered[path]


def only(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def server_container(objects: list[dict]) -> dict:
    [container] = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- rendering and schemas --------------------------------------------------------------

def test_every_kustomization_is_found():
    for expected in (*SERVICE_OVERLAYS, *KSERVE_OVERLAYS, "base", "training/single-gpu",
                     "training/multi-node"):
        assert expected in KUSTOMIZATIONS


@needs_kubectl
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_renders_and_validates(path):
    import kubernetes_validate

    objects = render(path)
    assert objects, f"{path} renders to nothing"
    for obj in objects:
        where = f"{path}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue  # no upstream schema: checked field by field below
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path_ = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} is invalid for Kubernetes {K8S_VERSION}: {path_}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{where}: {obj['apiVersion']} {obj['kind']} is neither built into "
                        f"Kubernetes {K8S_VERSION} nor a custom resource these tests check")


@needs_kubectl
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_pod_templates_inside_custom_resources_validate(path):
    """A PyTorchJob embeds pod templates, an InferenceService's predictor inlines a pod
    spec: validate them as PodTemplates."""
    import kubernetes_validate

    for obj in render(path):
        if obj["kind"] == "InferenceService":
            predictor = obj["spec"]["predictor"]
            pod = {k: v for k, v in predictor.items() if k not in KSERVE_EXTENSION_FIELDS}
            wrapper = {"apiVersion": "v1", "kind": "PodTemplate",
                       "metadata": {"name": f"{obj['metadata']['name']}-predictor"},
                       "template": {"spec": pod}}
            kubernetes_validate.validate(wrapper, K8S_VERSION, strict=True)
        if obj["kind"] != "PyTorchJob":
            continue
        for role, spec in obj["spec"]["pytorchReplicaSpecs"].items():
            wrapper = {"apiVersion": "v1", "kind": "PodTemplate",
                       "metadata": {"name": f"{obj['metadata']['name']}-{role.lower()}"},
                       "template": spec["template"]}
            kubernetes_validate.validate(wrapper, K8S_VERSION, strict=True)


# --- the service overlays ---------------------------------------------------------------

@needs_kubectl
@pytest.mark.parametrize("overlay", SERVICE_OVERLAYS)
def test_service_overlay_has_every_piece_and_they_fit(overlay):
    objects = render(overlay)
    namespaces = {o["metadata"].get("namespace") for o in objects}
    assert len(namespaces) == 1 and None not in namespaces, namespaces

    deployment = only(objects, "Deployment")
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"

    service = only(objects, "Service")
    assert matches(service["spec"]["selector"], pod_labels)
    container = server_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports

    hpa = only(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = only(objects, "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)

    monitor = only(objects, "ServiceMonitor")
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports and endpoint["path"] == "/metrics"

    # The model is chosen by environment, from a ConfigMap this overlay ships.
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    env_from = [e["configMapRef"]["name"] for e in container.get("envFrom", [])]
    assert env_from and all(name in configmaps for name in env_from)
    assert any("DCGAN_MODELS" in configmaps[name]["data"] for name in env_from)
    token = [e for e in container["env"] if e["name"] == "DCGAN_API_TOKEN"]
    assert token and token[0]["valueFrom"]["secretKeyRef"]["optional"] is True


@needs_kubectl
@pytest.mark.parametrize("overlay", SERVICE_OVERLAYS)
def test_probes_resources_and_security(overlay):
    objects = render(overlay)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    container = server_container(objects)
    port_names = {p["name"] for p in container["ports"]}
    probes = {kind: container[kind]["httpGet"] for kind in
              ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["startupProbe"]["path"] == "/livez"
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert all(p["port"] in port_names for p in probes.values())

    for side in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][side]), side

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # With a read-only root, every place the server writes must be a volume: scratch
    # space, and BentoML's home, which it populates at start.
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    for variable in ("TMPDIR", "BENTOML_HOME"):
        assert any(env[variable] == m or env[variable].startswith(m.rstrip("/") + "/")
                   for m in mounts), f"{variable}={env[variable]} is not on a writable volume"

    # ONNX Runtime sizes its thread pool from the node's cores unless told: keep every
    # worker's together within the pod's CPU limit.
    settings = {}
    for ref in container["envFrom"]:
        settings.update(next(o for o in objects if o["kind"] == "ConfigMap" and
                             o["metadata"]["name"] == ref["configMapRef"]["name"])["data"])
    workers = re.fullmatch(r"services\.DCGAN\.workers=(\d+)", settings["BENTOML_CONFIG_OPTIONS"])
    threads = int(settings["DCGAN_ORT_THREADS"]) * int(workers[1])
    assert 1 <= threads <= _cpus(container["resources"]["limits"]["cpu"])
    # Every value is one the service accepts: a bad one would leave the new pods not ready.
    from service.settings import Settings

    Settings.from_env(settings)


def _cpus(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


@needs_kubectl
@pytest.mark.parametrize("overlay", SERVICE_OVERLAYS)
def test_termination_grace_outlasts_the_longest_request(overlay):
    """In-flight requests finish before the kubelet kills the pod: the grace period
    covers the preStop pause plus the service's own request timeout."""
    timeout = _service_request_timeout()
    objects = render(overlay)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    container = server_container(objects)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pause = float(pre_stop[-1]) if pre_stop[0] == "sleep" else 0.0
    assert pod["terminationGracePeriodSeconds"] > pause + timeout


def _service_request_timeout() -> float:
    """The service's traffic timeout (BentoML's default when it sets none)."""
    code = ("import json, service.service as s; "
            "print(json.dumps(s.DCGAN.config.get('traffic', {}).get('timeout')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"cannot import service.service to read its timeout:\n{result.stderr[-2000:]}")
    value = json.loads(result.stdout.strip().splitlines()[-1])
    return float(value if value is not None else 60)


@needs_kubectl
def test_gpu_overlay_asks_for_a_gpu_and_tolerates_gpu_taints():
    gpu, cpu = render("overlays/gpu"), render("overlays/cpu")
    container = server_container(gpu)
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    pod = only(gpu, "Deployment")["spec"]["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule"
               for t in pod["tolerations"])
    assert container["image"].endswith("-gpu"), "the GPU overlay runs the CUDA Bento's image"
    cpu_container = server_container(cpu)
    assert "nvidia.com/gpu" not in cpu_container["resources"]["limits"]
    assert not cpu_container["image"].endswith("-gpu")


@needs_kubectl
def test_monitoring_objects_ship_the_rules_and_dashboard_files():
    objects = render("overlays/cpu")
    rule = only(objects, "PrometheusRule")
    groups = yaml.safe_load((DEPLOY / "prometheus/rules.yaml").read_text())["groups"]
    assert rule["spec"]["groups"] == groups, "prometheusrule.yaml has drifted from rules.yaml"
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert r.get("expr") and (("alert" in r) != ("record" in r))
    dashboards = [o for o in objects if o["kind"] == "ConfigMap"
                  and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert len(dashboards) == 1
    shipped = json.loads(dashboards[0]["data"]["dcgan-service.json"])
    assert shipped == json.loads((DEPLOY / "grafana/dcgan-service.json").read_text())


# --- KServe -------------------------------------------------------------------------------

@needs_kubectl
@pytest.mark.parametrize("overlay", KSERVE_OVERLAYS)
def test_inference_service_is_a_v2_custom_predictor_with_probes_and_resources(overlay):
    """KServe's CRD schema cannot be fetched here: check by hand the fields it requires
    and what its controller reads (a custom predictor's protocol is the PROTOCOL variable
    of its first container; `protocolVersion` belongs to `predictor.model`)."""
    objects = render(overlay)
    isvc = only(objects, "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["name"] and isvc["metadata"].get("namespace")
    assert set(isvc["spec"]) == {"predictor"}, "a predictor only: no transformer, no explainer"
    predictor = isvc["spec"]["predictor"]
    assert "model" not in predictor, "a custom predictor, not a model on a ServingRuntime"
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    [container] = predictor["containers"]
    assert container["name"] == "kserve-container" and "dcgan-service" in container["image"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PROTOCOL"]["value"] == "v2"
    assert env["DCGAN_API_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    [port] = container["ports"]
    assert port["containerPort"] == 3000 and port["name"] in ("http1", "h2c")
    probes = {kind: container[kind]["httpGet"] for kind in
              ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/v2/health/live"
    assert all(p["port"] == port["containerPort"] for p in probes.values())
    for side in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][side]), side
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert "/tmp" in mounts and env["BENTOML_HOME"]["value"].startswith("/tmp/")
    # The settings come from a ConfigMap the overlay ships (its hashed name followed), and
    # the service accepts every value in it.
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    [ref] = container["envFrom"]
    settings = configmaps[ref["configMapRef"]["name"]]["data"]
    assert "DCGAN_MODELS" in settings
    from service.settings import Settings

    Settings.from_env(settings)
    monitor = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert monitor and monitor[0]["spec"]["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    assert any(r.get("replacement") == "dcgan-service" and r["targetLabel"] == "job"
               for e in monitor[0]["spec"]["endpoints"] for r in e["relabelings"])
    gpu = "nvidia.com/gpu" in container["resources"]["limits"]
    assert gpu == (overlay == "kserve/gpu") == container["image"].endswith("-gpu")
    if gpu:
        assert settings["DCGAN_DEVICE"] == "cuda"
        assert any(t["key"] == "nvidia.com/gpu" for t in predictor["tolerations"])


# --- training ---------------------------------------------------------------------------

@needs_kubectl
def test_training_jobs_run_on_one_gpu_with_a_volume_for_runs():
    job = only(render("training/single-gpu"), "Job")
    pytorchjob = only(render("training/multi-node"), "PyTorchJob")
    assert set(pytorchjob["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
    templates = [job["spec"]["template"]] + [
        spec["template"] for spec in pytorchjob["spec"]["pytorchReplicaSpecs"].values()]
    for objects, template in ((render("training/single-gpu"), templates[0]),
                              *((render("training/multi-node"), t) for t in templates[1:])):
        container = template["spec"]["containers"][0]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
        claims = {v["persistentVolumeClaim"]["claimName"] for v in template["spec"]["volumes"]
                  if "persistentVolumeClaim" in v}
        pvcs = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
        assert claims and claims <= set(pvcs)
        run_dir = next(e["value"] for e in container["env"] if e["name"] == "RUN_DIR")
        assert any(run_dir.startswith(m["mountPath"] + "/") for m in container["volumeMounts"]
                   if m["name"] in {v["name"] for v in template["spec"]["volumes"]
                                    if "persistentVolumeClaim" in v})
    for spec in pytorchjob["spec"]["pytorchReplicaSpecs"].values():
        assert spec["replicas"] >= 1
        assert spec["template"]["spec"]["containers"][0]["name"] == "pytorch"
    shared = only(render("training/multi-node"), "PersistentVolumeClaim")
    assert "ReadWriteMany" in shared["spec"]["accessModes"], "every node reads the checkpoint"


def _run_script(container: dict, run_dir: Path, shims: Path) -> list[list[str]]:
    """Run a training container's shell script with `dcgan`/`torchrun` shims that log
    their arguments; returns the logged command lines."""
    log = shims / "calls.jsonl"
    log.unlink(missing_ok=True)
    env = {"PATH": f"{shims}:{os.environ['PATH']}", "RUN_DIR": str(run_dir),
           "PET_NNODES": "4", "PET_NODE_RANK": "2", "PET_NPROC_PER_NODE": "1",
           "MASTER_ADDR": "master-0", "MASTER_PORT": "23456", "CALLS": str(log)}
    command = [*container["command"], *container["args"]]
    subprocess.run(command, env=env, check=True, timeout=30)
    return [json.loads(line) for line in log.read_text().splitlines()]


@needs_kubectl
def test_training_containers_resume_only_when_a_checkpoint_exists(tmp_path, monkeypatch):
    shims = tmp_path / "bin"
    shims.mkdir()
    for name in ("dcgan", "torchrun"):
        shim = shims / name
        shim.write_text('#!/usr/bin/env python3\nimport json, os, sys\n'
                        'open(os.environ["CALLS"], "a").write(json.dumps(sys.argv) + "\\n")\n')
        shim.chmod(0o755)
    containers = [only(render("training/single-gpu"), "Job")["spec"]["template"]["spec"]
                  ["containers"][0]]
    containers += [spec["template"]["spec"]["containers"][0] for spec in
                   only(render("training/multi-node"), "PyTorchJob")["spec"]
                   ["pytorchReplicaSpecs"].values()]
    train_args = []
    for container in containers:
        run_dir = tmp_path / "runs" / container["name"]
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)
        [fresh] = _run_script(container, run_dir, shims)
        assert "--resume" not in fresh
        (run_dir / "checkpoint.pt").write_bytes(b"")
        [again] = _run_script(container, run_dir, shims)
        assert again[again.index("--resume") + 1] == str(run_dir)
        if Path(fresh[0]).name == "torchrun":
            assert {"--nnodes=4", "--node_rank=2", "--nproc_per_node=1",
                    "--master_addr=master-0", "--master_port=23456"} <= set(fresh)
            fresh = fresh[fresh.index("training.cli") + 1:]
        else:
            fresh = fresh[1:]
        assert fresh[0] == "train"
        train_args.append((fresh[1:], run_dir))

    # The same arguments parse with the real command line (dry run: nothing trained).
    typer_testing = pytest.importorskip("typer.testing")
    torch = pytest.importorskip("torch")
    from training.cli import app

    # The jobs ask for --device cuda, which the CLI refuses where no GPU is visible; a dry
    # run only resolves the config, so let it believe there is one.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    for args, run_dir in train_args:
        result = typer_testing.CliRunner().invoke(app, ["train", *args, "--dry-run"])
        assert result.exit_code == 0, result.output
        resolved = json.loads(result.output)
        assert resolved["run_dir"] == str(run_dir) and resolved["device"] == "cuda"


def test_training_image_installs_the_locked_training_extra_and_runs_as_non_root():
    dockerfile = (DEPLOY / "training" / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in dockerfile.splitlines()
                    if line.strip() and not line.startswith(("#", " "))]
    users = [rest.strip() for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    assert any("--require-hashes -r deploy/training/requirements.txt" in rest for rest in runs)
    assert any("--no-deps ." in rest for rest in runs), "the project itself, without resolving"
    assert [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"] == ['["dcgan"]']
    # Everything `pip install .` needs is copied in, and the build context lets it through.
    copied = {source.rstrip("/") for keyword, rest in instructions if keyword == "COPY"
              for source in rest.split()[:-1] if not source.startswith("--")}
    packages = {"models", "training", "service"}
    needed = {"pyproject.toml", "README.md", "deploy/training/requirements.txt"} | packages
    assert needed <= copied
    allowed = (DEPLOY / "training" / "Dockerfile.dockerignore").read_text().split()
    for name in needed:
        assert f"!{name}" in allowed or f"!{name}/" in allowed, name


def _pod_specs(node):
    """Every pod spec (a mapping with `containers`) inside a manifest."""
    if isinstance(node, dict):
        if "containers" in node:
            yield node
        for value in node.values():
            yield from _pod_specs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _pod_specs(value)


def test_gpu_pods_ask_for_the_gpu_resource_and_need_no_node_label():
    """The `nvidia.com/gpu` request alone schedules onto GPU nodes; a nodeSelector on
    GPU Feature Discovery's label would leave pods pending on clusters without it."""
    files = [DEPLOY / "overlays/gpu/deployment-gpu.yaml", DEPLOY / "training/single-gpu/job.yaml",
             DEPLOY / "training/multi-node/pytorchjob.yaml"]
    specs = [spec for f in files for doc in yaml.safe_load_all(f.read_text())
             for spec in _pod_specs(doc)]
    assert len(specs) >= 4
    for spec in specs:
        limits = [c.get("resources", {}).get("limits", {}) for c in spec["containers"]]
        assert any("nvidia.com/gpu" in lim for lim in limits)
        assert "nvidia.com/gpu.present" not in (spec.get("nodeSelector") or {})
