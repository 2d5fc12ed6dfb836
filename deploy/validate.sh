#!/usr/bin/env bash
# Validates deploy/ offline, with real tools:
#   1. compose.yaml with `docker compose config` (or docker-compose 1.29 from Debian);
#   2. the Kubernetes manifests against the API's JSON schemas (kubernetes-validate from
#      PyPI, which ships the schemas inside the package: no network at validation time),
#      plus a deliberately broken manifest that must be rejected;
#   3. the Prometheus config and alert rules with promtool (Debian package prometheus);
#   4. the Grafana dashboard: JSON parses, datasource matches the provisioning, and every
#      seat_ledger_* metric it or the alert rules query is one the code exports;
#   5. the TOML configs parse and agree with compose.yaml and prometheus.yml.
# Installs what is missing (apt-get for Debian packages; a venv under the cache dir for
# PyPI packages), is idempotent, and exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cache="${SEAT_LEDGER_CACHE:-}"
if [ -z "$cache" ]; then
  if mkdir -p /var/cache/seat-ledger 2>/dev/null && [ -w /var/cache/seat-ledger ]; then
    cache=/var/cache/seat-ledger
  else
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/seat-ledger"
  fi
fi
mkdir -p "$cache"
venv="$cache/deploy-venv"
KUBERNETES_VALIDATE_VERSION=1.37.0
failures=0
checked=()
pass() { echo "  ok   $*"; checked+=("$*"); }
fail() { echo "  FAIL $*" >&2; failures=$((failures + 1)); }
step() { echo "== $*"; }

sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then $sudo_cmd apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

step "tools"
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  echo "  installing docker-compose (Debian)"
  apt_install docker-compose
  compose=(docker-compose)
fi
echo "  compose:  ${compose[*]} ($("${compose[@]}" version --short 2>/dev/null || "${compose[@]}" version | head -1))"
if ! command -v promtool >/dev/null 2>&1; then
  echo "  installing prometheus (Debian; for promtool)"
  apt_install prometheus
fi
echo "  promtool: $(promtool --version 2>&1 | head -1)"
command -v python3 >/dev/null 2>&1 || apt_install python3
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_install python3-venv
fi
if [ ! -x "$venv/bin/kubernetes-validate" ] \
  || [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  echo "  installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv (PyPI)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
echo "  kubernetes-validate: $("$venv/bin/kubernetes-validate" --version 2>&1 | tail -1)"

step "compose: ${compose[*]} config"
# Secrets are files made by gen-secrets.sh; config does not need them to exist.
if out=$("${compose[@]}" -f "$here/compose.yaml" config 2>&1); then
  services=$(printf '%s\n' "$out" | "$venv/bin/python" -c 'import sys, yaml; print(" ".join(sorted(yaml.safe_load(sys.stdin)["services"])))')
  pass "compose.yaml is valid; services: $services"
  for want in raft-node-1 raft-node-2 raft-node-3 api-1 api-2 prometheus grafana; do
    case " $services " in *" $want "*) ;; *) fail "compose.yaml has no service $want";; esac
  done
else
  printf '%s\n' "$out" >&2
  fail "compose.yaml does not validate"
fi

step "kubernetes manifests: kubernetes-validate --strict (schemas shipped in the package)"
k8s_files=("$here"/k8s/*.yaml)
if "$venv/bin/kubernetes-validate" --strict --quiet "${k8s_files[@]}"; then
  pass "k8s: ${#k8s_files[@]} files valid against the Kubernetes $KUBERNETES_VALIDATE_VERSION schemas (strict)"
else
  fail "k8s manifests do not validate"
fi
# Negative control: the validator must reject an unknown field and a wrong type, or a
# pass above means nothing.
bad="$(mktemp --suffix=.yaml)"
trap 'rm -f "$bad"' EXIT
cat > "$bad" <<'YAML'
apiVersion: apps/v1
kind: StatefulSet
metadata: { name: broken }
spec:
  replicas: "three"
  serviceName: x
  selector: { matchLabels: { a: b } }
  template:
    metadata: { labels: { a: b } }
    spec:
      containers: [{ name: c, image: i, readinessProbe: { httpGet: { path: /health/ready, port: 8000 } }, bogusField: 1 }]
YAML
if "$venv/bin/kubernetes-validate" --strict --quiet "$bad" >/dev/null 2>&1; then
  fail "negative control: the validator accepted a broken StatefulSet"
else
  pass "negative control: a broken StatefulSet is rejected"
fi

step "prometheus: promtool check config / rules"
if promtool check config "$here/prometheus/prometheus.yml"; then
  pass "prometheus.yml and its rule files"
else
  fail "promtool check config"
fi
if promtool check rules "$here/prometheus/alerts.yml"; then
  pass "alerts.yml"
else
  fail "promtool check rules"
fi

step "dashboard, metric names and configs against the code"
if "$venv/bin/python" - "$repo" <<'PY'; then
import json, pathlib, re, sys, tomllib, yaml

repo = pathlib.Path(sys.argv[1])
deploy = repo / "deploy"
problems = []

# Metrics the code exports: every metrics::counter!/gauge!/histogram!("name" ...).
exported = {}
for crate in ("raft-node", "api", "state-machine"):
    for path in sorted((repo / crate / "src").rglob("*.rs")):
        text = path.read_text()
        for kind, name in re.findall(r'metrics::(counter|gauge|histogram)!\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"', text):
            exported[name] = kind
if not exported:
    problems.append("found no exported metric in the code: the scan is broken")
# Histograms render as summaries (metrics-exporter-prometheus default): name, _sum, _count.
queryable = set(exported)
for name, kind in exported.items():
    if kind == "histogram":
        queryable |= {name + "_sum", name + "_count", name + "_bucket"}
print(f"  code exports {len(exported)} metrics: {', '.join(sorted(exported))}")

# Metrics from outside the project that the rules may use.
external = re.compile(r"^(up|kubelet_volume_stats_\w+|node_filesystem_\w+)$")

def metrics_in(expr):
    # Drop label matchers' values and strings, then take identifiers that are not
    # functions, keywords, durations or label names.
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    words = re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", expr)
    keywords = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                "group_left", "group_right", "inf", "nan"}
    return {w for w in words if w not in keywords and not re.match(r"^\d", w)}

def check_expr(where, expr):
    for metric in sorted(metrics_in(expr)):
        if metric in queryable or external.match(metric):
            continue
        problems.append(f"{where}: queries {metric}, which the code does not export")

# Dashboard.
dash_path = deploy / "grafana/dashboards/seat-ledger.json"
try:
    dash = json.loads(dash_path.read_text())
except ValueError as e:
    problems.append(f"{dash_path}: not JSON: {e}")
    dash = {"panels": []}
ds = yaml.safe_load((deploy / "grafana/provisioning/datasources/prometheus.yaml").read_text())
uids = {d["uid"] for d in ds["datasources"]}
queries = 0
for panel in dash.get("panels", []):
    title = panel.get("title", "?")
    if panel.get("datasource", {}).get("uid") not in uids:
        problems.append(f"dashboard panel {title!r}: datasource uid not provisioned")
    targets = panel.get("targets", [])
    if not targets:
        problems.append(f"dashboard panel {title!r}: no query")
    for target in targets:
        queries += 1
        check_expr(f"dashboard panel {title!r}", target["expr"])
for var in dash.get("templating", {}).get("list", []):
    definition = var.get("definition", "")
    # label_values(metric, label): only the first argument is a metric.
    match = re.match(r"\s*label_values\((.*),\s*\w+\s*\)\s*$", definition)
    check_expr(f"dashboard variable {var['name']}", match.group(1) if match else definition)
print(f"  dashboard: {len(dash.get('panels', []))} panels, {queries} queries")

# Alert rules.
rules = yaml.safe_load((deploy / "prometheus/alerts.yml").read_text())
count = 0
for group in rules["groups"]:
    for rule in group["rules"]:
        count += 1
        check_expr(f"alert {rule.get('alert')}", rule["expr"])
print(f"  alerts: {count} rules")

# TOML configs parse and agree with compose and Prometheus.
cluster = tomllib.loads((deploy / "config/cluster.toml").read_text())
compose = yaml.safe_load((deploy / "compose.yaml").read_text())
prom = yaml.safe_load((deploy / "prometheus/prometheus.yml").read_text())
targets = {t for job in prom["scrape_configs"] if job["job_name"] == "raft-node"
           for sc in job["static_configs"] for t in sc["targets"]}
regions = set()
for node in cluster["nodes"]:
    service = compose["services"].get(f"raft-node-{node['id']}")
    if service is None:
        problems.append(f"cluster.toml node {node['id']}: no compose service raft-node-{node['id']}")
        continue
    ip = service["networks"]["ledger"]["ipv4_address"]
    for field in ("peer_addr", "client_addr"):
        if node[field].rsplit(":", 1)[0] != ip:
            problems.append(f"cluster.toml node {node['id']} {field} {node[field]} is not its compose address {ip}")
    if str(service["environment"].get("SEAT_LEDGER_NODE_ID")) != str(node["id"]):
        problems.append(f"compose raft-node-{node['id']}: SEAT_LEDGER_NODE_ID does not match")
    if service["labels"].get("seat-ledger.region") != node["region"]:
        problems.append(f"compose raft-node-{node['id']}: region label is not {node['region']}")
    if node["client_addr"] not in targets:
        problems.append(f"prometheus.yml does not scrape node {node['id']} at {node['client_addr']}")
    regions.add(node["region"])
if len(regions) != 3:
    problems.append(f"cluster.toml: expected 3 regions, found {sorted(regions)}")
for shard in cluster["shards"]:
    if len(shard["members"]) % 2 == 0:
        problems.append(f"cluster.toml shard {shard['name']}: an even number of voters")
if "global" not in {s["name"] for s in cluster["shards"]}:
    problems.append("cluster.toml: no global shard (accounts)")
for api in ("api-1", "api-2"):
    conf = tomllib.loads((deploy / f"config/{api}.toml").read_text())
    addrs = {n["id"]: n["client_addr"] for n in conf["nodes"]}
    if addrs != {n["id"]: n["client_addr"] for n in cluster["nodes"]}:
        problems.append(f"config/{api}.toml: nodes differ from cluster.toml")
    if not {c["shard"] for c in conf["cities"]} <= {s["name"] for s in cluster["shards"]}:
        problems.append(f"config/{api}.toml: a city's shard is not in cluster.toml")
# The Kubernetes ConfigMap's files parse too.
for doc in yaml.safe_load_all((deploy / "k8s/10-config.yaml").read_text()):
    for name, text in doc.get("data", {}).items():
        if name.endswith(".toml"):
            try:
                tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                problems.append(f"k8s/10-config.yaml {name}: {e}")
print(f"  configs: cluster.toml ({len(cluster['nodes'])} nodes, regions {', '.join(sorted(regions))}), api-1/api-2.toml, k8s ConfigMap")

for p in problems:
    print(f"  FAIL {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
  pass "dashboard JSON, metric names in dashboard and alerts, configs consistent"
else
  fail "dashboard / metrics / configs"
fi

step "summary"
for c in "${checked[@]}"; do echo "  checked: $c"; done
if [ "$failures" -ne 0 ]; then
  echo "deploy/validate.sh: $failures check(s) failed" >&2
  exit 1
fi
echo "deploy/validate.sh: all ${#checked[@]} checks passed (no container engine here: images were not built)"
