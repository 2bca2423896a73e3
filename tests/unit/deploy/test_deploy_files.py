"""The files under deploy/ agree with the code they deploy.

Nothing can be started here (no Docker engine, no cluster), so these tests
parse every manifest and check what would otherwise fail only at deploy time:
that every YAML and JSON file parses, that containers run `journeys`
subcommands and options that exist, that every JOURNEYS_* variable is a
setting, that the Kubernetes objects reference each other correctly, that no
process needs a disk of its own (state lives in Kafka), that the topics
created ahead match the pipeline's, that Prometheus and Grafana query metrics,
data sources and columns that exist, and that the cluster schema matches the
single-node migrations. The dashboard's
SQL and the cluster schema also run on the embedded ClickHouse (`integration`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from journeys.cli import main
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.migrate import migration_files, statements

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
EXTRA_VARIABLES = {"JOURNEYS_IDLE_AFTER", "JOURNEYS_WORKERS"}
SETTING_VARIABLES = {f"JOURNEYS_{name.upper()}" for name in Settings.model_fields}
CONTRACT_TABLES = {
    "events",
    "phase_transitions",
    "journeys",
    "alerts",
    "dead_letters",
    "identity_links",
}
ANALYTICS_VIEWS = {
    "analytics_accounts_per_phase",
    "analytics_accounts_per_phase_by_segment",
    "analytics_cohort_funnel",
    "analytics_time_in_phase",
    "analytics_transition_touchpoints",
    "analytics_transition_channels",
    "analytics_dmu_coverage",
    "analytics_dmu_roles",
    "analytics_decision_without_decider",
    "analytics_open_alerts",
    "analytics_repeat_orders",
    "analytics_customer_tiers",
    "analytics_customer_pyramid",
    "analytics_engagement",
    "analytics_attribution_by_channel",
    "analytics_attribution_by_campaign",
    "analytics_attribution_by_content",
}


# ---------------------------------------------------------------- helpers


def yaml_files() -> list[Path]:
    """Every YAML file under deploy/."""
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml"})


def load_all(path: Path) -> list[Any]:
    """The non-empty documents of a YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc is not None]


def compose() -> dict[str, Any]:
    """deploy/docker-compose.yml, anchors resolved."""
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text("utf-8"))


def k8s_objects() -> list[dict[str, Any]]:
    """Every Kubernetes object under deploy/k8s (kustomization excluded)."""
    objects = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            objects.extend(load_all(path))
    return objects


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    """The one object of this kind and name."""
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every workload in deploy/k8s."""
    for obj in k8s_objects():
        if obj["kind"] in {"Deployment", "Job"}:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def journeys_k8s_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, container) of every container running the journeys image."""
    for name, spec in pod_specs():
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            if container["image"].split(":")[0].endswith("journeys"):
                yield name, container


def journeys_compose_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the journeys image."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image", "").startswith("journeys:")
    }


def as_env(environment: dict[str, Any] | list[str] | None) -> dict[str, str]:
    """A compose `environment` (map or list form) as a dict of strings."""
    if environment is None:
        return {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def settings_from(env: dict[str, str]) -> Settings:
    """Settings built from JOURNEYS_* variables, as the process would build them."""
    given: dict[str, Any] = {
        key.removeprefix("JOURNEYS_").lower(): value
        for key, value in env.items()
        if key.startswith("JOURNEYS_") and key not in EXTRA_VARIABLES
    }
    return Settings(**given)


def help_exit_code(args: list[str]) -> tuple[int, str]:
    """Exit code and output of `journeys ARGS --help` (options are parsed, nothing runs)."""
    result = CliRunner().invoke(main, [*args, "--help"])
    return result.exit_code, result.output


# ------------------------------------------------------------ every file parses


def test_every_yaml_and_json_file_parses() -> None:
    files = yaml_files()
    assert len(files) >= 15
    for path in files:
        assert load_all(path), f"{path} is empty"
    dashboards = sorted(DEPLOY.rglob("*.json"))
    assert [p.name for p in dashboards] == ["journeys.json"]
    for path in dashboards:
        assert json.loads(path.read_text("utf-8"))["panels"]


def test_every_journeys_variable_is_a_setting() -> None:
    allowed = SETTING_VARIABLES | EXTRA_VARIABLES
    seen = set()
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        seen |= set(re.findall(r"\bJOURNEYS_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text("utf-8")))
    assert seen - allowed == set()
    assert {
        "JOURNEYS_KAFKA_BOOTSTRAP",
        "JOURNEYS_CLICKHOUSE_URL",
        "JOURNEYS_DATA_DIR",
        "JOURNEYS_IDLE_AFTER",
        "JOURNEYS_WRITE_KEYS",
    } <= seen


# ---------------------------------------------------------------- docker compose


def test_compose_runs_the_broker_clickhouse_and_each_process_type() -> None:
    services = compose()["services"]
    assert {
        "kafka",
        "clickhouse",
        "migrate",
        "worker",
        "sink",
        "collect",
        "prometheus",
        "grafana",
        "kafka-exporter",
    } <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:3.9.")
    kafka_env = as_env(services["kafka"]["environment"])
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka_env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["sink"]["deploy"]["replicas"] == 1
    assert services["collect"]["deploy"]["replicas"] == 1
    assert services["collect"]["ports"] == ["8080:8080"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"


def test_compose_processes_wait_for_migrations_and_share_settings() -> None:
    services = journeys_compose_services()
    assert set(services) == {"migrate", "worker", "sink", "collect"}
    clickhouse_env = as_env(compose()["services"]["clickhouse"]["environment"])
    for name, service in services.items():
        env = as_env(service["environment"])
        assert env["JOURNEYS_KAFKA_BOOTSTRAP"] == "kafka:9092"
        password = clickhouse_env["CLICKHOUSE_PASSWORD"]
        assert password.startswith("${CLICKHOUSE_PASSWORD:?")
        assert env["JOURNEYS_CLICKHOUSE_URL"] == f"http://journeys:{password}@clickhouse:8123"
        assert clickhouse_env["CLICKHOUSE_USER"] == "journeys"
        resolved = {k: v.replace(password, "pw") for k, v in env.items()}
        resolved = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in resolved.items()}
        settings = settings_from(resolved)
        assert settings.clickhouse_dsn == "http://journeys:pw@clickhouse:8123"
        assert settings.data_dir == Path("/data")
        if name != "migrate":
            condition = service["depends_on"]["migrate"]["condition"]
            assert condition == "service_completed_successfully"
    collect_env = as_env(services["collect"]["environment"])
    assert collect_env["JOURNEYS_COLLECT_HOST"] == "0.0.0.0"
    assert collect_env["JOURNEYS_COLLECT_PORT"] == "8080"
    assert as_env(services["worker"]["environment"])["JOURNEYS_IDLE_AFTER"] == "2"


def test_compose_has_no_default_password_and_publishes_only_the_collector() -> None:
    spec = compose()
    text = (DEPLOY / "docker-compose.yml").read_text("utf-8")
    # Every password and the write keys must be set by the operator: `${X:?...}` stops compose.
    for name in (
        "CLICKHOUSE_PASSWORD",
        "CLICKHOUSE_GRAFANA_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "JOURNEYS_WRITE_KEYS",
    ):
        uses = re.findall(r"\$\{" + name + r"(:?[-?])", text)
        assert uses and set(uses) == {":?"}, name
        assert f"{name}=" in (DEPLOY / "compose.env.example").read_text("utf-8")
    published = {name: service.get("ports", []) for name, service in spec["services"].items()}
    for name, ports in published.items():
        for port in ports:
            if name == "collect":
                continue
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert {name for name, ports in published.items() if ports} >= {"clickhouse", "grafana"}
    assert "deploy/.env" in (DEPLOY.parent / ".gitignore").read_text("utf-8")


def test_compose_workers_scale_without_volumes() -> None:
    spec = compose()
    worker = spec["services"]["worker"]
    # `docker compose up --scale worker=N`: nothing a second replica would clash on.
    assert not {"volumes", "ports", "container_name", "hostname"} & set(worker)
    assert not any(name.startswith("worker") for name in spec["volumes"])
    env = as_env(worker["environment"])
    assert env["JOURNEYS_JOURNEY_PARTITIONS"] == "${JOURNEYS_JOURNEY_PARTITIONS:-4}"
    health = " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{env['JOURNEYS_METRICS_PORT']}/health" in health
    for service in journeys_compose_services().values():
        assert "JOURNEYS_JOURNEY_PARTITIONS" in as_env(service["environment"])


def test_compose_mounts_files_that_exist_and_declares_its_volumes() -> None:
    spec = compose()
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in spec["volumes"], f"{name} uses undeclared volume {source}"
    for service in journeys_compose_services().values():
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (ROOT / "deploy" / "Dockerfile").is_file()


def test_compose_and_k8s_run_journeys_subcommands_that_exist() -> None:
    runs = [
        (f"compose {name}", service["command"])
        for name, service in journeys_compose_services().items()
    ]
    runs += [(f"k8s {name}", container["args"]) for name, container in journeys_k8s_containers()]
    assert {args[0] for _, args in runs} == {"migrate", "worker", "sink", "collect"}
    for where, args in runs:
        assert args[0] in main.commands, f"{where}: no `journeys {args[0]}`"
        code, output = help_exit_code(list(args))
        assert code == 0, f"{where}: `journeys {' '.join(args)}` does not parse: {output}"


def test_dockerfile_installs_the_project_as_a_non_root_journeys_entrypoint() -> None:
    text = (DEPLOY / "Dockerfile").read_text("utf-8")
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim", "python:3.11-slim"]
    assert 'ENTRYPOINT ["journeys"]' in text
    assert "USER 10001:10001" in text
    assert "ENV" in text and "JOURNEYS_DATA_DIR=/data" in text
    copied = set(re.findall(r"^COPY (\w+) ", text, re.M))
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert copied == packages
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text("utf-8")
    assert {f"!{p}/**" for p in packages} <= set(ignored.split())


# ------------------------------------------------------------------ kubernetes


def test_k8s_objects_live_in_the_namespace_and_kustomization_lists_them() -> None:
    objects = k8s_objects()
    namespaced = [o for o in objects if o["kind"] not in {"Namespace", "KafkaTopic"}]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"journeys"}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text("utf-8"))
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk


def test_k8s_settings_build_valid_settings() -> None:
    config = k8s_object("ConfigMap", "journeys-settings")["data"]
    secret = k8s_object("Secret", "journeys-secrets")["stringData"]
    assert set(config) & set(secret) == set()
    settings = settings_from({**config, **secret})
    assert settings.clickhouse_dsn.startswith("http://journeys:")
    assert settings.clickhouse_dsn.endswith(":8123")
    assert settings.data_dir == Path("/data")
    assert settings.collect_host == "0.0.0.0"
    assert settings.collect_port == 8080
    assert settings.cart_abandon_after == 4 * 3600 * 1000
    assert settings.metrics_port == 9100
    assert settings.journey_partitions == 8


def test_k8s_containers_reference_existing_settings_and_secret_keys() -> None:
    config = k8s_object("ConfigMap", "journeys-settings")
    secret = k8s_object("Secret", "journeys-secrets")
    for workload, container in journeys_k8s_containers():
        refs = [e["configMapRef"]["name"] for e in container.get("envFrom", [])]
        assert refs == [config["metadata"]["name"]], workload
        for variable in container.get("env", []):
            ref = variable["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] == variable["name"]
            assert ref["key"] in secret["stringData"], f"{workload}: {ref['key']}"


def test_k8s_workloads_run_as_planned() -> None:
    worker = k8s_object("Deployment", "journeys-worker")
    sink = k8s_object("Deployment", "journeys-sink")
    collect = k8s_object("Deployment", "journeys-collect")
    job = k8s_object("Job", "journeys-migrate")
    kinds = {o["kind"] for o in k8s_objects()}
    assert kinds.isdisjoint({"StatefulSet", "PersistentVolumeClaim"})
    assert worker["spec"]["replicas"] == 2
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert sink["spec"]["replicas"] == 1
    assert sink["spec"]["strategy"]["type"] == "Recreate"
    assert collect["spec"]["replicas"] == 2
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    needs_clickhouse = {
        name
        for name, c in journeys_k8s_containers()
        if any(e["name"] == "JOURNEYS_CLICKHOUSE_URL" for e in c.get("env", []))
    }
    assert needs_clickhouse == {"journeys-sink", "journeys-migrate"}


def test_k8s_pods_keep_nothing_on_disk() -> None:
    # State lives in Kafka's changelog topics: every volume is scratch, and the
    # read-only root filesystem needs one at the data dir and at /tmp.
    data_dir = k8s_object("ConfigMap", "journeys-settings")["data"]["JOURNEYS_DATA_DIR"]
    for name, spec in pod_specs():
        assert all(set(v) == {"name", "emptyDir"} for v in spec["volumes"]), name
        mounts = {m["mountPath"] for c in spec["containers"] for m in c["volumeMounts"]}
        assert mounts == {data_dir, "/tmp"}, name
    assert not any("volumeClaimTemplates" in o.get("spec", {}) for o in k8s_objects())


def test_k8s_worker_and_sink_probe_health_on_the_metrics_port() -> None:
    port = int(k8s_object("ConfigMap", "journeys-settings")["data"]["JOURNEYS_METRICS_PORT"])
    probes = {
        "journeys-worker": {"startupProbe", "readinessProbe", "livenessProbe"},
        "journeys-sink": {"readinessProbe", "livenessProbe"},
    }
    for name, expected in probes.items():
        container = k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert {key for key in container if key.endswith("Probe")} == expected, name
        for probe in expected:
            get = container[probe]["httpGet"]
            assert get["path"] == "/health", name
            assert ports[get["port"]] == port, name
        # A Kafka outage must not restart the process within a few probe periods.
        liveness = container["livenessProbe"]
        assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 300, name


def _cpu(value: str | int) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _memory_mi(value: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0}
    return float(value[:-2]) * units[value[-2:]]


def test_k8s_resources_fit_two_core_nodes() -> None:
    total_cpu = 0.0
    for name, spec in pod_specs():
        replicas = next(
            o["spec"].get("replicas", 1)
            for o in k8s_objects()
            if o["metadata"]["name"] == name and o["kind"] in {"Deployment", "Job"}
        )
        for container in spec["containers"]:
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            assert _cpu(requests["cpu"]) <= _cpu(limits["cpu"]) <= 1.0, name
            assert _memory_mi(requests["memory"]) <= _memory_mi(limits["memory"]) <= 2048, name
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            if name != "journeys-migrate":
                total_cpu += replicas * _cpu(requests["cpu"])
        assert spec["securityContext"]["runAsNonRoot"] is True, name
    assert total_cpu == pytest.approx(1.45)


def test_k8s_collector_probes_health_on_its_service_port() -> None:
    collect = k8s_object("Deployment", "journeys-collect")
    container = collect["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health"
        assert ports[get["port"]] == 8080
    service = k8s_object("Service", "journeys-collect")
    assert service["spec"]["ports"][0]["targetPort"] in ports
    labels = collect["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_k8s_disruption_budgets_select_pods_that_exist() -> None:
    budgets = [o for o in k8s_objects() if o["kind"] == "PodDisruptionBudget"]
    assert {b["metadata"]["name"] for b in budgets} == {"journeys-worker", "journeys-collect"}
    workloads = {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == "Deployment"}
    for budget in budgets:
        labels = workloads[budget["metadata"]["name"]]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def strimzi_topics() -> dict[str, dict[str, Any]]:
    """The KafkaTopics of optional/strimzi-topics.yaml by name."""
    topics = load_all(K8S / "optional" / "strimzi-topics.yaml")
    return {topic["metadata"]["name"]: topic["spec"] for topic in topics}


def test_strimzi_topics_are_the_pipelines_topics_with_its_partitions() -> None:
    from journeys.producers.topics import pipeline_layout

    config = k8s_object("ConfigMap", "journeys-settings")["data"]
    settings = settings_from({**config, "JOURNEYS_CLICKHOUSE_URL": "http://h:8123"})
    layout = {settings.topic(name): n for name, n in pipeline_layout(settings).items()}
    topics = strimzi_topics()
    assert {name: spec["partitions"] for name, spec in topics.items()} == layout
    journey = int(config["JOURNEYS_JOURNEY_PARTITIONS"])
    for name in ("internal.journeys", "internal.rows", "internal.journeys-state"):
        assert topics[f"journeys.{name}"]["partitions"] == journey, name
    for name in ("internal.ordered", "internal.identity-state"):
        assert topics[f"journeys.{name}"]["partitions"] == 1, name
    compacted = {n for n, s in topics.items() if s["config"].get("cleanup.policy") == "compact"}
    assert compacted == {"journeys.internal.identity-state", "journeys.internal.journeys-state"}
    for name, spec in topics.items():
        assert spec["replicas"] == 3, name
        assert spec["config"]["min.insync.replicas"] == 2, name


INTERNAL_TOPICS = (
    "internal.ordered",
    "internal.journeys",
    "internal.rows",
    "internal.identity-state",
    "internal.journeys-state",
)


def test_guides_describe_stateless_workers_and_the_journey_partitions() -> None:
    guides = {
        path: path.read_text("utf-8")
        for path in (DEPLOY / "README.md", K8S / "README.md", ROOT / "docs" / "streaming.md")
    }
    for path, text in guides.items():
        assert "JOURNEYS_JOURNEY_PARTITIONS" in text, path
        for name in INTERNAL_TOPICS:
            assert f"journeys.{name}" in text, f"{path}: journeys.{name}"
        for gone in ("StatefulSet `journeys-worker`", "ReadWriteMany", "/data/stage"):
            assert gone not in text, f"{path}: {gone}"
        if "RocksDB" in text:  # journeys out of memory: a cache, nothing to keep
            assert "cache of the" in text and "never the truth" in text, path
    assert "--scale worker=" in guides[DEPLOY / "README.md"]


# ------------------------------------------------------------ Prometheus, Grafana


def collector_metric_names() -> set[str]:
    """Sample names the collector's /metrics serves."""
    from journeys.producers.collect.handlers import Metrics

    registry = Metrics.create().registry
    names = set()
    for family in registry.collect():
        names |= {
            family.name,
            f"{family.name}_total",
            f"{family.name}_bucket",
            f"{family.name}_count",
            f"{family.name}_sum",
        }
    return names


def prometheus_expressions() -> list[str]:
    """Every PromQL expression in the alert rules and the dashboard."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text("utf-8"))
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "journeys.json").read_text("utf-8"))
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"] if "expr" in t]
    return exprs


def test_prometheus_scrapes_the_collector_and_loads_the_rules() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text("utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    collect = jobs["journeys-collect"]
    assert collect["metrics_path"] == "/metrics"
    assert collect["static_configs"][0]["targets"] == ["collect:8080"]
    assert jobs["kafka-exporter"]["static_configs"][0]["targets"] == ["kafka-exporter:9308"]
    assert [Path(f).name for f in config["rule_files"]] == ["alerts.yml"]


def test_alert_rules_cover_lag_errors_and_silence() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text("utf-8"))
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert {
        "JourneysWorkerLagHigh",
        "JourneysSinkLagHigh",
        "JourneysCollectorErrors",
        "JourneysNothingStored",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
    assert "[15m]" in alerts["JourneysNothingStored"]["expr"]
    assert 'status=~"5.."' in alerts["JourneysCollectorErrors"]["expr"]


def test_prometheus_queries_use_metrics_and_groups_that_exist() -> None:
    served = collector_metric_names()
    used = set()
    groups = set()
    for expr in prometheus_expressions():
        used |= set(re.findall(r"\bjourneys_collect_\w+", expr))
        groups |= set(re.findall(r'consumergroup(?:=~?)"([^"]+)"', expr))
    assert used and used <= served
    assert groups == {"journeys", "journeys-sink", "journeys|journeys-sink"}
    # The Faust app's id is the worker group; the sink names its own group.
    source = (ROOT / "streams" / "app.py").read_text("utf-8")
    assert 'f"{settings.topic_prefix}journeys",' in source
    sink_source = (ROOT / "sinks" / "consumer.py").read_text("utf-8")
    assert 'group="journeys-sink"' in sink_source
    kafka_source = (ROOT / "producers" / "kafka.py").read_text("utf-8")
    assert '"group_id": f"{settings.topic_prefix}{group}"' in kafka_source


def grafana_datasources() -> dict[str, dict[str, Any]]:
    """Provisioned Grafana data sources by uid."""
    path = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml"
    return {ds["uid"]: ds for ds in yaml.safe_load(path.read_text("utf-8"))["datasources"]}


def dashboard_sql() -> dict[str, str]:
    """Panel title -> ClickHouse SQL of the shipped dashboard."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "journeys.json").read_text("utf-8"))
    return {
        panel["title"]: target["rawSql"]
        for panel in dashboard["panels"]
        for target in panel["targets"]
        if "rawSql" in target
    }


def test_grafana_provisions_prometheus_and_clickhouse_for_the_dashboard() -> None:
    sources = grafana_datasources()
    assert sources["prometheus"]["type"] == "prometheus"
    clickhouse = sources["clickhouse"]
    assert clickhouse["type"] == "grafana-clickhouse-datasource"
    assert clickhouse["jsonData"]["defaultDatabase"] == "journeys"
    assert clickhouse["jsonData"]["protocol"] == "http"
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "journeys.json").read_text("utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in [panel, *panel["targets"]]:
            ds = target["datasource"]
            assert sources[ds["uid"]]["type"] == ds["type"], panel["title"]
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text("utf-8")
    )["providers"][0]
    grafana = compose()["services"]["grafana"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    assert grafana["environment"]["GF_INSTALL_PLUGINS"] == "grafana-clickhouse-datasource"


def test_dashboard_has_the_journey_panels() -> None:
    sql = dashboard_sql()
    assert set(sql) == {
        "Accounts per phase",
        "Funnel: accounts that reached each phase",
        "Median days between phases",
        "Open alerts by kind",
        "Open alerts",
        "Events per channel per hour",
        "Dead letters per reason",
    }
    assert "FROM journeys.journeys FINAL\nWHERE is_deleted = 0" in sql["Accounts per phase"]


# ------------------------------------------------------- cluster schema vs migrations


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


_CREATE = re.compile(
    r"CREATE TABLE IF NOT EXISTS (?P<db>\S+?)\.(?P<name>\w+)(?: ON CLUSTER '\{cluster\}')?\s*"
    r"(?:\((?P<body>.*)\)\s*|AS (?P<like>\S+)\s+)"
    r"ENGINE = (?P<engine>\w+)(?:\((?P<args>[^()]*(?:\([^()]*\)[^()]*)*)\))?"
    r"(?P<rest>.*)",
    re.S,
)


def parse_tables(sql: str) -> dict[str, dict[str, Any]]:
    """CREATE TABLE statements: name -> columns, indexes, engine, arguments, ORDER/PARTITION BY."""
    tables = {}
    for statement in statements(sql):
        match = _CREATE.match(statement)
        if not match:
            continue
        items = _split_top_level(match["body"]) if match["body"] else []
        columns = [
            tuple(re.split(r"\s+", item, maxsplit=1))
            for item in items
            if not item.startswith("INDEX ")
        ]
        rest = match["rest"]
        order = re.search(r"ORDER BY (.+?)\s*$", rest, re.S)
        partition = re.search(r"PARTITION BY (\S+)", rest)
        tables[match["name"]] = {
            "columns": [(name, re.sub(r"\s+", " ", kind)) for name, kind in columns],
            "indexes": [re.sub(r"\s+", " ", i) for i in items if i.startswith("INDEX ")],
            "engine": match["engine"],
            "args": [a.strip() for a in _split_top_level(match["args"] or "")],
            "order_by": order[1].strip() if order else None,
            "partition_by": partition[1] if partition else None,
            "like": match["like"],
        }
    return tables


def migration_tables() -> dict[str, dict[str, Any]]:
    """The single-node schema: every migration's tables, in order."""
    tables: dict[str, dict[str, Any]] = {}
    for _, sql in migration_files():
        tables.update(parse_tables(sql))
    return tables


def cluster_sql() -> str:
    """deploy/clickhouse/cluster.sql."""
    return (DEPLOY / "clickhouse" / "cluster.sql").read_text("utf-8")


def test_cluster_local_tables_match_the_migrations() -> None:
    single = migration_tables()
    cluster = parse_tables(cluster_sql())
    local = {
        name.removesuffix("_local"): t for name, t in cluster.items() if name.endswith("_local")
    }
    assert CONTRACT_TABLES <= set(single)
    assert set(local) == set(single)
    for name, table in local.items():
        reference = single[name]
        assert table["columns"] == reference["columns"], name
        assert table["indexes"] == reference["indexes"], name
        assert table["order_by"] == reference["order_by"], name
        assert table["partition_by"] == reference["partition_by"], name
        assert table["engine"] == "Replicated" + reference["engine"], name
        path, replica, *args = table["args"]
        assert path == "'/clickhouse/tables/{shard}/{database}/{table}'"
        assert replica == "'{replica}'"
        assert args == reference["args"], name


def test_cluster_distributed_tables_keep_the_contract_names_and_shard_by_the_key() -> None:
    single = migration_tables()
    cluster = parse_tables(cluster_sql())
    distributed = {name: t for name, t in cluster.items() if t["engine"] == "Distributed"}
    assert set(distributed) == set(single)
    keys = {}
    for name, table in distributed.items():
        assert table["like"] == f"journeys.{name}_local"
        cluster_name, database, local, key = table["args"]
        assert (cluster_name, database, local) == ("'{cluster}'", "journeys", f"{name}_local")
        columns = set(re.findall(r"\w+", key)) - {"cityHash64"}
        order_columns = set(re.findall(r"\w+", single[name]["order_by"]))
        assert columns <= order_columns, f"{name}: sharding by {key} splits versions of a key"
        keys[name] = key
    assert keys["events"] == "cityHash64(event_id)"
    assert keys["journeys"] == keys["phase_transitions"] == "cityHash64(account_id)"
    assert keys["alerts"] == "cityHash64(alert_id)"


def test_cluster_views_match_the_migrations() -> None:
    def views(sql: str) -> dict[str, str]:
        found = {}
        for statement in statements(sql):
            match = re.match(
                r"CREATE (?:OR REPLACE )?VIEW (?:IF NOT EXISTS )?\S+?\.(\w+)"
                r"(?: ON CLUSTER '\{cluster\}')? AS\s+(.*)",
                statement,
                re.S,
            )
            if match:
                found[match[1]] = re.sub(r"\s+", " ", match[2].replace("{db}", "journeys"))
        return found

    single = {}
    for _, sql in migration_files():
        single.update(views(sql))
    assert views(cluster_sql()) == single
    current = {f"{table}_current" for table in CONTRACT_TABLES}
    assert current | {"open_alerts"} <= set(single)
    assert {name for name in single if name.startswith("analytics_")} == ANALYTICS_VIEWS


def test_cluster_records_every_migration_so_migrate_changes_nothing() -> None:
    record = "INSERT INTO journeys.schema_migrations"
    inserts = [s for s in statements(cluster_sql()) if s.startswith(record)]
    assert len(inserts) == 1
    assert re.findall(r"'(\w+)'", inserts[0]) == [name for name, _ in migration_files()]
    migrations_table = parse_tables(cluster_sql())["schema_migrations"]
    assert migrations_table["engine"] == "ReplicatedReplacingMergeTree"
    assert "{shard}" not in migrations_table["args"][0]  # one copy on every node, not per shard


def test_cluster_alters_every_table_the_migrations_alter() -> None:
    """A migration's ALTER TABLE has twins on the cluster: the same change to the local
    table, and its columns to the Distributed table in front of it (a sorting key, the
    projections and the settings of merges are the local table's alone)."""
    alter = re.compile(
        r"ALTER TABLE (?:\{db\}|journeys)\.(\w+)(?: ON CLUSTER '\{cluster\}')?\s+(.*)", re.S
    )
    single: dict[str, list[str]] = {}
    for _, sql in migration_files():
        for statement in statements(sql):
            if match := alter.match(statement):
                single.setdefault(match[1], []).append(re.sub(r"\s+", " ", match[2]))
    cluster: dict[str, list[str]] = {}
    for statement in statements(cluster_sql()):
        if match := alter.match(statement):
            assert " ON CLUSTER '{cluster}'" in statement.split("\n")[0], statement[:60]
            cluster.setdefault(match[1], []).append(re.sub(r"\s+", " ", match[2]))
    expected = {}
    for table, changes in single.items():
        expected[f"{table}_local"] = changes
        distributed = [re.sub(r", MODIFY ORDER BY \([^)]*\)", "", c) for c in changes]
        local_only = re.compile(r"(ADD|MATERIALIZE) PROJECTION|MODIFY SETTING")
        if kept := [c for c in distributed if not local_only.match(c)]:
            expected[table] = kept
    assert cluster == expected
    assert "ADD COLUMN IF NOT EXISTS generation UInt32" in expected["alerts"]


def test_every_cluster_statement_runs_on_the_cluster() -> None:
    for statement in statements(cluster_sql()):
        if statement.startswith("CREATE"):
            assert " ON CLUSTER '{cluster}'" in statement.split("\n")[0], statement[:60]


# ------------------------------------------------- on the embedded ClickHouse engine


@pytest.fixture()
def replayed(chdb_dsn: str, database_name: Callable[[str], str], tmp_path: Path) -> tuple[Any, str]:
    """A database with simulated journeys replayed into it: (client, database)."""
    from journeys.cmd_core import replay_files
    from journeys.sinks.clickhouse.client import connect

    db = database_name("deploy")
    events = tmp_path / "events.jsonl"
    args = ["simulate", "--accounts", "40", "--days", "60", "--out", str(events)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    settings = Settings(clickhouse_url=chdb_dsn, clickhouse_database=db, data_dir=tmp_path)
    replay_files((str(events),), settings, quiet=True)
    return connect(chdb_dsn), db


def _in_database(sql: str, db: str) -> str:
    since = r"\1 >= toDateTime64('2000-01-01 00:00:00', 3, 'UTC')"
    sql = re.sub(r"\$__timeFilter\((\w+)\)", since, sql)
    return re.sub(r"\bjourneys\.(?=\w)", f"{db}.", sql)


@pytest.mark.integration
def test_dashboard_queries_agree_with_the_projects_own_queries(replayed: tuple[Any, str]) -> None:
    from journeys.sinks.clickhouse import queries
    from journeys.streams.engine.rules import load_rules

    client, db = replayed
    rows = {
        title: [tuple(row) for row in client.query(_in_database(sql, db)).result_rows]
        for title, sql in dashboard_sql().items()
    }
    phases = list(load_rules().phases)
    assert sorted(rows["Accounts per phase"]) == sorted(queries.accounts_per_phase(client, db))
    assert rows["Funnel: accounts that reached each phase"] == queries.funnel(client, db, phases)
    assert rows["Open alerts by kind"] == queries.open_alerts(client, db)
    median = {
        (a, b): round(days, 1) for a, b, days in queries.median_days_between_phases(client, db)
    }
    assert {(a, b): days for a, b, days, _ in rows["Median days between phases"]} == median
    per_channel: dict[str, int] = {}
    for _, channel, count in rows["Events per channel per hour"]:
        per_channel[channel] = per_channel.get(channel, 0) + count
    total_events = client.query(f"SELECT count() FROM {db}.events FINAL").result_rows[0][0]
    assert sum(per_channel.values()) == total_events
    assert set(per_channel) <= {"web", "email", "order", "sales"}
    dead = client.query(f"SELECT count() FROM {db}.dead_letters FINAL").result_rows[0][0]
    assert dead > 0
    assert sum(n for _, n in rows["Dead letters per reason"]) == dead
    assert len(rows["Open alerts"]) == sum(n for _, n in rows["Open alerts by kind"])


@pytest.mark.integration
def test_cluster_local_tables_create_the_same_schema_as_the_migrations(
    chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    from journeys.sinks.clickhouse.client import connect
    from journeys.sinks.clickhouse.migrate import migrate

    client = connect(chdb_dsn)
    single, local = database_name("single"), database_name("local")
    migrate(client, single)
    client.command(f"CREATE DATABASE {local}")
    created = 0
    for statement in statements(cluster_sql()):
        if re.match(r"ALTER TABLE journeys\.\w+_local ", statement):  # columns added later
            client.command(
                re.sub(
                    r"\bjourneys\.", f"{local}.", statement.replace(" ON CLUSTER '{cluster}'", "")
                )
            )
            continue
        if "ReplicatedReplacingMergeTree" not in statement or "schema_migrations" in statement:
            continue  # Distributed tables and views need a cluster; migrate makes its own record
        statement = statement.replace(" ON CLUSTER '{cluster}'", "")
        statement = re.sub(
            r"ReplicatedReplacingMergeTree\('[^']*', '\{replica\}'(?:, )?",
            "ReplacingMergeTree(",
            statement,
        )
        statement = statement.replace("ReplacingMergeTree()", "ReplacingMergeTree")
        client.command(re.sub(r"\bjourneys\.", f"{local}.", statement))
        created += 1
    assert created == 10  # 0009 adds privacy_requests and privacy_suppressions, 0010 generations

    def describe(db: str, suffix: str) -> dict[str, Any]:
        tables = client.query(
            "SELECT name, engine_full, sorting_key, partition_key FROM system.tables "
            "WHERE database = {db:String} AND engine LIKE '%MergeTree'",
            parameters={"db": db},
        ).result_rows
        columns = client.query(
            "SELECT table, name, type, default_kind, default_expression FROM system.columns "
            "WHERE database = {db:String} ORDER BY table, position",
            parameters={"db": db},
        ).result_rows
        out: dict[str, Any] = {}
        for name, engine_full, sorting, partition in tables:
            if name == "schema_migrations":
                continue
            key = name.removesuffix(suffix)
            out[key] = {
                "engine": engine_full.split(" SETTINGS ")[0].replace(f"{db}.", ""),
                "sorting": sorting,
                "partition": partition,
                "columns": [tuple(c[1:]) for c in columns if c[0] == name],
            }
        return out

    described = describe(single, "")
    assert set(described) == {
        "events",
        "phase_transitions",
        "journeys",
        "alerts",
        "dead_letters",
        "identity_links",
        "derived_settings",
        "privacy_requests",
        "privacy_suppressions",
        "generations",
    }
    assert described["journeys"]["sorting"] == "account_id, generation"
    assert describe(local, "_local") == described
