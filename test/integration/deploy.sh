#!/usr/bin/env bash
#
# test/integration/deploy.sh — the deployment: kustomize/, the overlay
# renderer, the nginx proxy config, the Dockerfile.  Needs no cluster.
#
#   1. script/render-overlay.sh into a copy of kustomize/: reproduces the
#      committed overlays exactly; a second run changes nothing; one more
#      table line makes one more overlay; removing it removes the overlay;
#      invalid lines are rejected without writing anything.
#   2. The overlays are the original's (INTEROP §6.6, §6.7, written out
#      below independently of render-overlay.sh): exactly the (namespace,
#      environment) pairs FINT deploys; `kubectl kustomize` on base/ and
#      every overlay succeeds; every object is in the overlay's namespace;
#      org id (namespace with dots), role pairs (the original's JSON for
#      that namespace), topic ACL <namespace>.flyt.*, base path
#      /<namespace> or /beta/<namespace>, the Traefik IngressRoute (entry
#      point web, Host && PathPrefix, middleware fint-flyt-auth-forward-sso)
#      and PostgREST settings are where they belong; every
#      ConfigMap/Secret/Service a workload references by name exists (or is
#      one of the Secrets the deployer creates); internal_clients is gone.
#   3. yamllint (.yamllint) on every YAML file under kustomize/ and on every
#      rendered output.
#   4. nginx -t on the proxy template rendered as the nginx image would.
#   5. nginx on a loopback port in front of an echo server (python3): both
#      path rewrites, the JSON body, the Authorization header; an id of
#      digits as a JSON number, any other id of URL-safe characters as a
#      JSON string (PostgREST answers that 400 after authorising: not run
#      here, PostgREST is not installed), any other id 400 from nginx
#      without reaching the upstream; 405 for GET.
#   6. docker/Dockerfile: sh -n of every RUN line, the files it copies exist.
#
# kubectl (Debian: kubernetes-client), yamllint, nginx and envsubst
# (gettext-base) are installed with apt-get when missing and we are root;
# otherwise the test fails, saying what is missing.  Set KUBECTL to use
# another kubectl.  Bounded (TIME_LIMIT); stops what it started.
set -uo pipefail

repo=${FLYT_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
cd "$repo" || exit 1
TIME_LIMIT=${FLYT_DEPLOY_TIME_LIMIT:-240}

passed=0
failed=0
ok() {
	passed=$((passed + 1))
	printf 'ok %d - %s\n' "$((passed + failed))" "$1"
}
not_ok() {
	failed=$((failed + 1))
	printf 'not ok %d - %s\n' "$((passed + failed))" "$1"
	[ -z "${2:-}" ] || printf '%s\n' "$2" | sed -n '1,40s/^/#   /p'
}
# check NAME COMMAND...: ok when COMMAND succeeds; its output shown if not.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then ok "$name"; else not_ok "$name" "$out"; fi
}
finish() {
	printf '%d passed, %d failed\n' "$passed" "$failed"
	[ "$failed" -eq 0 ]
	exit
}

# --- tools ---------------------------------------------------------------
KUBECTL=${KUBECTL:-kubectl}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
need=()
command -v "$KUBECTL" >/dev/null 2>&1 || need+=(kubernetes-client)
command -v yamllint >/dev/null 2>&1 || need+=(yamllint)
[ -x "$NGINX" ] || need+=(nginx)
command -v envsubst >/dev/null 2>&1 || need+=(gettext-base)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ "${#need[@]}" -gt 0 ]; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "# installing ${need[*]}"
		export DEBIAN_FRONTEND=noninteractive
		{ apt-get update && apt-get install -y --no-install-recommends "${need[@]}"; } >/dev/null 2>&1 ||
			{ not_ok "apt-get install ${need[*]}"; finish; }
		NGINX=${NGINX:-/usr/sbin/nginx}
		[ -x "$NGINX" ] || NGINX=/usr/sbin/nginx
	else
		# a suite that cannot run has not passed
		not_ok "deploy tests need ${need[*]}" "as root: apt-get install -y ${need[*]} (script/deps.sh lists them)"
		finish
	fi
fi
# python3 with the yaml module (yamllint brings python3-yaml).
PY=python3
"$PY" -c 'import yaml' 2>/dev/null || PY=/usr/bin/python3
"$PY" -c 'import yaml' 2>/dev/null || { not_ok "python3 with the yaml module (python3-yaml)"; finish; }
echo "# kubectl: $("$KUBECTL" version --client 2>/dev/null | head -1)"

# --- scratch space, processes, time limit ------------------------------------
work=$(mktemp -d /tmp/flyt-deploy.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	[ -n "${watchdog:-}" ] && kill "$watchdog" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
(
	trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
	sleep "$TIME_LIMIT" &
	sleeper=$!
	wait "$sleeper"
	echo "not ok - time limit of ${TIME_LIMIT}s reached"
	kill -TERM $$
) &
watchdog=$!

# --- 1. render-overlay.sh -------------------------------------------------------
cp -a kustomize "$work/k"
rm -rf "$work/k/overlays"
check "render-overlay.sh renders every line of kustomize/overlays.tsv" \
	script/render-overlay.sh -q -C "$work/k"
check "the committed overlays are what render-overlay.sh makes (rerun it and commit)" \
	diff -r kustomize/overlays "$work/k/overlays"
sum_tree() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum; find . | sort); }
before=$(sum_tree "$work/k")
out=$(script/render-overlay.sh -C "$work/k" 2>&1)
after=$(sum_tree "$work/k")
if [ "$before" = "$after" ] && [[ $out == *", 0 file(s) changed"* ]]; then
	ok "a second render changes nothing"
else
	not_ok "a second render changes nothing" "$out"
fi

# One more county: one line.
new=$'nyfk-no\tbeta\tviken.no'
new_pairs='{"nyfk.no":["USER"],"viken.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}'
cp -a "$work/k" "$work/k2"
printf '%s\n' "$new" >>"$work/k2/overlays.tsv"
check "one more table line renders one more overlay" \
	script/render-overlay.sh -q -C "$work/k2"
check "... in overlays/nyfk-no/beta/" test -f "$work/k2/overlays/nyfk-no/beta/kustomization.yaml"
cp kustomize/overlays.tsv "$work/k2/overlays.tsv"
script/render-overlay.sh -q -C "$work/k2" >/dev/null 2>&1
check "removing the line removes that overlay" test ! -e "$work/k2/overlays/nyfk-no"
check "... and leaves the others as committed" diff -r kustomize/overlays "$work/k2/overlays"

bad_line() {
	local line=$1 why=$2
	rm -rf "$work/k3"
	cp -a "$work/k" "$work/k3"
	printf '%s\n' "$line" >>"$work/k3/overlays.tsv"
	before=$(sum_tree "$work/k3")
	if script/render-overlay.sh -q -C "$work/k3" >"$work/bad.out" 2>&1; then
		not_ok "render-overlay.sh rejects $why" "$(cat "$work/bad.out")"
	elif [ "$before" != "$(sum_tree "$work/k3")" ]; then
		not_ok "render-overlay.sh rejects $why without writing anything"
	else
		ok "render-overlay.sh rejects $why: $(head -1 "$work/bad.out")"
	fi
}
bad_line $'x-no\tbeta' "a line with 2 fields"
bad_line $'x-no\tbeta\t-\t-' "a line with 4 fields"
bad_line $'x_no\tbeta\t-' "a namespace outside [a-z0-9-]"
bad_line $'xno\tbeta\t-' "a namespace without a dash (no org id with a dot)"
bad_line $'x--no\tbeta\t-' "a namespace with a double dash"
bad_line $'x-no\tprod\t-' "an environment other than api and beta"
bad_line $'x-no\tbeta,beta\t-' "an environment twice"
bad_line $'x-no\tbeta\to\'brien.no' "an org id with a quote"
bad_line $'x-no\tbeta\tvigo.no' "an org that has its roles already"
bad_line $'afk-no\tbeta\t-' "a second line for the same namespace"

# --- 2. kubectl kustomize ---------------------------------------------------------
# The facts, written out here and not derived from kustomize/overlays.tsv:
# INTEROP §6.6, the namespaces and environments the original is deployed to
# (the original's kustomize/overlays/<ns>/<env>/ and CD matrix) and the
# org/role pairs its render-overlay.sh gives each.
facts=$(
	cat <<'EOF'
afk-no              api,beta {"afk.no":["USER"],"viken.no":["USER"],"frid-iks.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
agderfk-no          api,beta {"agderfk.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
bfk-no              api,beta {"bfk.no":["USER"],"viken.no":["USER"],"frid-iks.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
bym-oslo-kommune-no api      {"bym.oslo.kommune.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
ffk-no              api,beta {"ffk.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
fintlabs-no         beta     {"fintlabs.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
innlandetfylke-no   api,beta {"innlandetfylke.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
mrfylke-no          api      {"mrfylke.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
nfk-no              api      {"nfk.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
ofk-no              api,beta {"ofk.no":["USER"],"viken.no":["USER"],"frid-iks.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
rogfk-no            api,beta {"rogfk.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
telemarkfylke-no    api,beta {"telemarkfylke.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
tromsfylke-no       api,beta {"tromsfylke.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
trondelagfylke-no   api,beta {"trondelagfylke.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
vestfoldfylke-no    api,beta {"vestfoldfylke.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
vlfk-no             api,beta {"vlfk.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}
EOF
)
# "namespace env pairs" for every expected overlay.
overlays=()
while read -r ns envs pairs; do
	IFS=, read -r -a el <<<"$envs"
	for env in "${el[@]}"; do overlays+=("$ns $env $pairs"); done
done <<<"$facts"
check "INTEROP §6.6: 16 namespaces, 15 api and 13 beta overlays" \
	test "$(wc -l <<<"$facts"):${#overlays[@]}:$(printf '%s\n' "${overlays[@]}" | grep -c ' api ')" = 16:28:15
want=$(printf '%s\n' "${overlays[@]}" | cut -d' ' -f1,2 | tr ' ' / | sort)
have=$(cd kustomize/overlays && find . -name kustomization.yaml | sed 's,^\./,,; s,/kustomization.yaml$,,' | sort)
check "the committed overlays are exactly INTEROP §6.6's namespaces and environments" \
	diff <(printf '%s\n' "$want") <(printf '%s\n' "$have")
if out=$(grep -rn -i 'internal.clients' kustomize script/render-overlay.sh); then
	not_ok "nothing under kustomize/ nor render-overlay.sh mentions internal_clients" "$out"
else
	ok "nothing under kustomize/ nor render-overlay.sh mentions internal_clients"
fi

mkdir -p "$work/out"
if "$KUBECTL" kustomize kustomize/base >"$work/out/base.yaml" 2>"$work/out/base.err"; then
	ok "kubectl kustomize kustomize/base"
	check "base: the objects and settings" "$PY" - "$work/out/base.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = sorted((d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "ConfigMap" and d["metadata"]["name"] != "flyt-instance-kafka-acl" else d["metadata"]["name"]) for d in docs)
want = [("ConfigMap", n) for n in ["flyt-instance-initdb", "flyt-instance-postgres-files", "flyt-instance-postgres-exporter", "flyt-instance-postgrest-config", "flyt-instance-proxy", "flyt-instance-proxy-env", "flyt-instance-settings", "flyt-instance-kafka-acl"]]
want += [("Deployment", "flyt-instance-postgrest"), ("Deployment", "flyt-instance-proxy"), ("IngressRoute", "flyt-instance"),
         ("Service", "flyt-instance-postgres"), ("Service", "flyt-instance-postgrest"), ("Service", "flyt-instance-proxy"),
         ("StatefulSet", "flyt-instance-postgres"),
         ("PodMonitor", "flyt-instance-postgres"), ("PrometheusRule", "flyt-instance")]
assert kinds == sorted(want), kinds
PY
else
	not_ok "kubectl kustomize kustomize/base" "$(cat "$work/out/base.err")"
fi

# Renders one overlay directory and checks it against the facts:
# check_overlay DIR NAMESPACE ENV PAIRS-JSON.
check_overlay() {
	local dir=$1 ns=$2 env=$3 pairs=$4 name=$2-$3
	if ! "$KUBECTL" kustomize "$dir" >"$work/out/$name.yaml" 2>"$work/out/$name.err"; then
		not_ok "kubectl kustomize $dir" "$(cat "$work/out/$name.err")"
		return
	fi
	ok "kubectl kustomize $dir"
	check "$name: namespace, org id, base path, IngressRoute, ACL prefix, role pairs, references" \
		"$PY" - "$work/out/$name.yaml" "$ns" "$env" "$pairs" <<'PY'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
ns, env, pairs = sys.argv[2:5]
org = ns.replace("-", ".")
base = {"api": "/", "beta": "/beta/"}[env] + ns
acl = ns + ".flyt.*"
host = "flyt.vigoiks.no"
errors = []
def expect(what, got, want):
    if got != want:
        errors.append("%s: got %r, want %r" % (what, got, want))
by = {}
for d in docs:
    m = d["metadata"]
    expect("namespace of %s %s" % (d["kind"], m["name"]), m.get("namespace"), ns)
    expect("label org-id of %s %s" % (d["kind"], m["name"]), m.get("labels", {}).get("fintlabs.no/org-id"), org)
    key = m["name"]
    if d["kind"] == "ConfigMap" and key != "flyt-instance-kafka-acl":
        key = key.rsplit("-", 1)[0]     # the generator's hash suffix
    by[(d["kind"], key)] = d
s = by[("ConfigMap", "flyt-instance-settings")]["data"]
expect("flyt_instance.org_id", s.get("flyt_instance.org_id"), org)
expect("settings mentioning internal_clients", [k for k in s if "internal_clients" in k], [])
got_pairs = json.loads(s["flyt_instance.authorized_org_id_role_pairs"])
expect("flyt_instance.authorized_org_id_role_pairs", got_pairs, json.loads(pairs))
# In the original's order too (only for the eye: a JSON object).
expect("order of the role pairs", list(got_pairs), list(json.loads(pairs)))
expect("flyt_instance.database", s.get("flyt_instance.database"), "flyt")
expect("topic-acl-prefix", by[("ConfigMap", "flyt-instance-kafka-acl")]["data"].get("topic-acl-prefix"), acl)
expect("FLYT_BASE_PATH", by[("ConfigMap", "flyt-instance-proxy-env")]["data"].get("FLYT_BASE_PATH"), base)
expect("openapi-server-proxy-uri", by[("ConfigMap", "flyt-instance-postgrest-config")]["data"].get("openapi-server-proxy-uri"),
       "https://%s%s/api/intern/handlinger/instanser/rest" % (host, base))
# The IngressRoute as flaiserator makes the original's (INTEROP §6.7).
ir = by[("IngressRoute", "flyt-instance")]
expect("IngressRoute apiVersion", ir["apiVersion"], "traefik.containo.us/v1alpha1")
expect("IngressRoute entryPoints", ir["spec"]["entryPoints"], ["web"])
expect("IngressRoute routes", len(ir["spec"]["routes"]), 1)
route = ir["spec"]["routes"][0]
expect("IngressRoute kind", route["kind"], "Rule")
expect("IngressRoute match", route["match"],
       "Host(`%s`) && (PathPrefix(`%s/api/intern/handlinger/instanser`) || PathPrefix(`%s/api/intern/admin/instanser`))"
       % (host, base, base))
expect("IngressRoute middlewares", route.get("middlewares"), [{"name": "fint-flyt-auth-forward-sso", "namespace": ns}])
svc = by[("Service", "flyt-instance-proxy")]["spec"]["ports"][0]["port"]
expect("IngressRoute services", route["services"], [{"name": "flyt-instance-proxy", "namespace": ns, "port": svc}])

# PostgREST.
c = by[("Deployment", "flyt-instance-postgrest")]["spec"]["template"]["spec"]["containers"][0]
expect("postgrest image", c["image"], "postgrest/postgrest:v12.2.3")
env = {e["name"]: e for e in c["env"]}
for k, v in {"PGRST_DB_SCHEMAS": "flyt_api", "PGRST_DB_ANON_ROLE": "flyt_web",
             "PGRST_DB_PRE_REQUEST": "flyt_api.pre_request", "PGRST_ADMIN_SERVER_PORT": "3001"}.items():
    expect(k, env.get(k, {}).get("value"), v)
for k in ("PGRST_DB_URI", "PGRST_JWT_SECRET"):
    expect(k + " from Secret", env.get(k, {}).get("valueFrom", {}).get("secretKeyRef", {}).get("name"), "flyt-instance-postgrest")
expect("postgrest liveness", (c["livenessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["port"]), ("/live", "admin"))
expect("postgrest readiness", (c["readinessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["port"]), ("/ready", "admin"))

# Postgres.
sts = by[("StatefulSet", "flyt-instance-postgres")]["spec"]
pc = sts["template"]["spec"]["containers"][0]
expect("postgres image", pc["image"], "ghcr.io/fintlabs/flyt-instance-postgres:0.5")
conf = by[("ConfigMap", "flyt-instance-postgres-files")]["data"]["postgresql.conf"]
if "shared_preload_libraries = 'flyt_instance'" not in conf:
    errors.append("postgresql.conf does not preload flyt_instance")
# Probes: pg_isready to start, flyt_api.liveness() (not readiness: Kafka
# down must not take the database out of the Service) after.
if "pg_isready" not in " ".join(pc["startupProbe"]["exec"]["command"]):
    errors.append("postgres startup probe does not use pg_isready")
for k in ("livenessProbe", "readinessProbe"):
    if "SELECT flyt_api.liveness()->>'status'" not in " ".join(pc[k]["exec"]["command"]):
        errors.append("postgres %s does not use flyt_api.liveness()" % k)
# The postgres_exporter sidecar, its queries, PodMonitor and PrometheusRule.
ex = [c for c in sts["template"]["spec"]["containers"] if c["name"] == "postgres-exporter"]
if len(ex) != 1:
    errors.append("no postgres-exporter sidecar")
else:
    ex = ex[0]
    expect("exporter image", ex["image"], "quay.io/prometheuscommunity/postgres-exporter:v0.11.1")
    expect("exporter port", [(p_["name"], p_["containerPort"]) for p_ in ex["ports"]], [("metrics", 9187)])
    expect("exporter queries", "--extend.query-path=/etc/postgres-exporter/queries.yaml" in ex["args"], True)
    eenv = {e["name"]: e for e in ex["env"]}
    expect("exporter user", eenv["DATA_SOURCE_USER"].get("value"), "flyt_monitor")
    expect("exporter password", eenv["DATA_SOURCE_PASS"]["valueFrom"]["secretKeyRef"], {"name": "flyt-instance-postgres", "key": "monitor-password"})
    qcm = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("flyt-instance-postgres-exporter-")]
    if len(qcm) != 1 or "flyt_metric_samples()" not in qcm[0]["data"]["queries.yaml"]:
        errors.append("ConfigMap flyt-instance-postgres-exporter lacks the queries")
pm = by[("PodMonitor", "flyt-instance-postgres")]["spec"]
expect("PodMonitor selector", pm["selector"]["matchLabels"], {"app.kubernetes.io/name": "flyt-instance-postgres"})
expect("PodMonitor endpoint", (pm["podMetricsEndpoints"][0]["port"], pm["podMetricsEndpoints"][0]["path"]), ("metrics", "/metrics"))
expect("PodMonitor jobLabel", pm["jobLabel"], "app.kubernetes.io/name")
pr = by[("PrometheusRule", "flyt-instance")]
expect("PrometheusRule namespace", pr["metadata"].get("namespace"), ns)
expect("PrometheusRule alerts", sorted(r["alert"] for g in pr["spec"]["groups"] for r in g["rules"]),
       sorted(["FlytInstanceWorkerNotRunning", "FlytInstanceCircuitOpen", "FlytInstanceDown", "FlytInstanceOutboxStuck",
               "FlytInstanceDeadLetters", "FlytInstanceConsumerLag", "FlytInstanceCleanupFailed",
               "FlytInstanceCleanupOverdue", "FlytInstanceMetricsDown"]))
if not sts.get("volumeClaimTemplates"):
    errors.append("no volumeClaimTemplates")
init = by[("ConfigMap", "flyt-instance-initdb")]["data"]["01-flyt-instance.sql"]
for s_ in ("CREATE EXTENSION IF NOT EXISTS flyt_instance", "GRANT flyt_web TO authenticator"):
    if s_ not in init:
        errors.append("initdb SQL lacks %r" % s_)

# Resources and probes on every container; every name reference resolves.
secrets = {"flyt-instance-postgres", "flyt-instance-postgrest", "flyt-instance-kafka"}   # made by the deployer
names = {(d["kind"], d["metadata"]["name"]) for d in docs}
for d in docs:
    if d["kind"] not in ("Deployment", "StatefulSet"):
        continue
    spec = d["spec"]["template"]["spec"]
    for c in spec["containers"]:
        for k in ("resources", "livenessProbe", "readinessProbe"):
            if not c.get(k):
                errors.append("%s/%s has no %s" % (d["metadata"]["name"], c["name"], k))
        for e in c.get("env", []) + c.get("envFrom", []):
            vf = e.get("valueFrom", e)
            if "configMapKeyRef" in vf or "configMapRef" in vf:
                n = (vf.get("configMapKeyRef") or vf.get("configMapRef"))["name"]
                if ("ConfigMap", n) not in names:
                    errors.append("%s references missing ConfigMap %s" % (d["metadata"]["name"], n))
            if "secretKeyRef" in vf and vf["secretKeyRef"]["name"] not in secrets:
                errors.append("%s references unknown Secret %s" % (d["metadata"]["name"], vf["secretKeyRef"]["name"]))
    for v in spec.get("volumes", []):
        if "configMap" in v and ("ConfigMap", v["configMap"]["name"]) not in names:
            errors.append("%s volume %s: missing ConfigMap %s" % (d["metadata"]["name"], v["name"], v["configMap"]["name"]))
        if "secret" in v and v["secret"]["secretName"] not in secrets:
            errors.append("%s volume %s: unknown Secret" % (d["metadata"]["name"], v["name"]))
for d in docs:
    if d["kind"] == "Service":
        sel = d["spec"]["selector"]
        if not any(x["kind"] in ("Deployment", "StatefulSet") and
                   all(x["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items()) for x in docs):
            errors.append("Service %s selects no pods" % d["metadata"]["name"])
if errors:
    print("\n".join(errors))
    sys.exit(1)
PY
}
for o in "${overlays[@]}"; do
	read -r ns env pairs <<<"$o"
	check_overlay "kustomize/overlays/$ns/$env" "$ns" "$env" "$pairs"
done
# The extra county (removed from k2 above): render it once more.
printf '%s\n' "$new" >>"$work/k2/overlays.tsv"
script/render-overlay.sh -q -C "$work/k2" >/dev/null 2>&1
check_overlay "$work/k2/overlays/nyfk-no/beta" nyfk-no beta "$new_pairs"

# --- 3. yamllint ---------------------------------------------------------------
check "yamllint kustomize/ and .yamllint" yamllint -s -c .yamllint kustomize .yamllint
# kubectl writes a long one-word string as "key: word" (the role pairs JSON
# of afk-no, bfk-no, ofk-no): a mapping, which the sources' allowance for
# long words does not cover.
cat >"$work/yamllint-out" <<EOF
extends: $repo/.yamllint
rules:
  line-length:
    max: 160
    allow-non-breakable-inline-mappings: true
EOF
check "yamllint every kubectl kustomize output" yamllint -s -c "$work/yamllint-out" "$work/out"

# --- 4. nginx -t ----------------------------------------------------------------
free_port() {
	"$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
base_path=/beta/afk-no
upstream_port=$(free_port)
proxy_port=$(free_port)
prefix=$work/nginx
mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
FLYT_BASE_PATH=$base_path FLYT_POSTGREST_URL=http://127.0.0.1:$upstream_port FLYT_PROXY_LISTEN=127.0.0.1:$proxy_port \
	envsubst '${FLYT_BASE_PATH} ${FLYT_POSTGREST_URL} ${FLYT_PROXY_LISTEN}' \
	<kustomize/base/files/flyt-instance.conf.template >"$prefix/conf/flyt-instance.conf"
cat >"$prefix/conf/nginx.conf" <<EOF
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log warn;
events { worker_connections 64; }
http {
    access_log $prefix/logs/access.log;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
    include $prefix/conf/flyt-instance.conf;
}
EOF
check "nginx -t on the proxy configuration" \
	"$NGINX" -t -q -p "$prefix" -e "$prefix/logs/error.log" -c "$prefix/conf/nginx.conf" -g 'daemon off; master_process off;'

# --- 5. nginx in front of an echo server -------------------------------------------
cat >"$work/echo.py" <<'PY'
# Echoes every request as JSON: method, path, headers, body.  A request
# whose body is {"instance_id": 404} gets a 404 (as PostgREST would).
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Echo(BaseHTTPRequestHandler):
    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        reply = json.dumps({"method": self.command, "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body}).encode()
        self.send_response(404 if body == '{"instance_id": 404}' else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        with open(sys.argv[2], "a") as log:
            log.write(self.command + " " + self.path + "\n")
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_one
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
PY
: >"$work/upstream.log"
"$PY" "$work/echo.py" "$upstream_port" "$work/upstream.log" &
pids+=($!)
"$NGINX" -p "$prefix" -e "$prefix/logs/error.log" -c "$prefix/conf/nginx.conf" -g 'daemon off; master_process off;' &
pids+=($!)

# req METHOD PATH [BODY] [CONTENT-TYPE]: prints "status<TAB>allow<TAB>body".
cat >"$work/req.py" <<'PY'
import http.client, sys, time
port, method, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
headers = {"Authorization": "Bearer test-token.abc", "Cookie": "session=secret"}
if len(sys.argv) > 5:
    headers["Content-Type"] = sys.argv[5]
for attempt in range(50):      # nginx may still be starting
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        print("%d\t%s\t%s" % (r.status, r.getheader("Allow") or "", r.read().decode()))
        break
    except ConnectionRefusedError:
        time.sleep(0.1)
PY
req() { "$PY" "$work/req.py" "$proxy_port" "$@"; }
# Both up: the echo server accepts connections, nginx answers /healthz.
wait_up() {
	for _ in $(seq 100); do
		if "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$upstream_port" 2>/dev/null &&
			[ "$(req GET /healthz 2>/dev/null | cut -c1-3)" = 200 ]; then
			return 0
		fi
		sleep 0.1
	done
	cat "$prefix/logs/error.log"
	return 1
}
check "nginx and the echo server are up" wait_up
# upstream_saw JSON-REPLY PYTHON-EXPRESSION [ARG]: the expression over r (the
# echoed request), ARG in sys.argv[3]
upstream_saw() {
	"$PY" -c '
import json, sys
try:
    r = json.loads(sys.argv[1].split("\t", 2)[2])
    good = eval(sys.argv[2])
except Exception as e:
    good = False
if not good:
    print("reply: " + sys.argv[1][:500])
sys.exit(0 if good else 1)' "$@"
}
status_of() { printf '%s' "${1%%$'\t'*}"; }
p=$base_path/api/intern/handlinger/instanser

r=$(req POST "$p/42/prov-igjen" 'ignored' text/plain)
check "POST .../42/prov-igjen -> 200 from upstream" test "$(status_of "$r")" = 200
check "... upstream got POST /rpc/retry" upstream_saw "$r" 'r["method"] == "POST" and r["path"] == "/rpc/retry"'
check '... with body {"instance_id": 42}' upstream_saw "$r" 'json.loads(r["body"]) == {"instance_id": 42} and r["body"] == "{\"instance_id\": 42}"'
check "... as application/json" upstream_saw "$r" 'r["headers"]["content-type"] == "application/json"'
check "... with the Authorization header as sent" upstream_saw "$r" 'r["headers"]["authorization"] == "Bearer test-token.abc"'
check "... without the Cookie header" upstream_saw "$r" '"cookie" not in r["headers"]'
r=$(req POST "$p/007/prov-igjen?select=x")
check "POST .../007/prov-igjen?select=x -> /rpc/retry {\"instance_id\": 7}, no query string" \
	upstream_saw "$r" 'r["path"] == "/rpc/retry" and json.loads(r["body"]) == {"instance_id": 7}'
r=$(req POST "$p/000000000000000000000042/prov-igjen")
check "POST .../000000000000000000000042/prov-igjen -> {\"instance_id\": 42}" upstream_saw "$r" 'r["body"] == "{\"instance_id\": 42}"'
r=$(req POST "$p/404/prov-igjen")
check "an upstream 404 (unknown instance) reaches the client with its body" \
	eval 'test "$(status_of "$r")" = 404 && upstream_saw "$r" "r[\"path\"] == \"/rpc/retry\""'

r=$(req POST "$p/prov-igjen/batch" '[1, 2, 3]' application/json)
check "POST .../prov-igjen/batch -> 200 from upstream" test "$(status_of "$r")" = 200
check "... upstream got POST /rpc/retry_batch" upstream_saw "$r" 'r["method"] == "POST" and r["path"] == "/rpc/retry_batch"'
check "... with the body as sent" upstream_saw "$r" 'r["body"] == "[1, 2, 3]"'
check "... as application/json with the Authorization header" \
	upstream_saw "$r" 'r["headers"]["content-type"] == "application/json" and r["headers"]["authorization"] == "Bearer test-token.abc"'
r=$(req POST "$p/prov-igjen/batch" '[5]' text/plain)
check "... application/json even when the client sent text/plain" upstream_saw "$r" 'r["headers"]["content-type"] == "application/json" and r["body"] == "[5]"'

# An id that is not a number is not judged by nginx: it goes to PostgREST as
# a JSON string, where db-pre-request (flyt_api.authorize) runs first and
# then the cast to bigint fails (22P02, 22003 out of range): 400, as the
# original's "Type mismatch." after its security filter.  Path as sent, the
# string expected (nginx decodes %XX first).
while read -r id want; do
	r=$(req POST "$p/$id/prov-igjen")
	check "POST .../$id/prov-igjen -> /rpc/retry {\"instance_id\": \"$want\"}" upstream_saw "$r" \
		'r["path"] == "/rpc/retry" and r["body"] == "{\"instance_id\": \"" + sys.argv[3] + "\"}" and r["headers"]["authorization"] == "Bearer test-token.abc"' "$want"
done <<'EOF'
abc abc
4x2 4x2
-1 -1
+5 +5
4.2 4.2
1_000 1_000
12345678901234567890 12345678901234567890
a~b a~b
%41b Ab
%2541 %41
EOF
# Any other id never goes into a JSON body: 400 from nginx itself.
n_before=$(wc -l <"$work/upstream.log")
for id in %22 'a"b' a%22b %5C %5C%22 %0A %7B%7D %20 4%2C2 %27 %C3%A4 %3C; do
	r=$(req POST "$p/$id/prov-igjen")
	check "POST .../$id/prov-igjen -> 400 from nginx, JSON" eval \
		'test "$(status_of "$r")" = 400 && upstream_saw "$r" "r[\"code\"] == \"22P02\""'
done
r=$(req GET "$p/abc/prov-igjen")
check "GET .../abc/prov-igjen -> 405" test "$(status_of "$r")" = 405
r=$(req GET "$p/%22/prov-igjen")
check "GET .../%22/prov-igjen -> 405" test "$(status_of "$r")" = 405
r=$(req GET "$p/42/prov-igjen")
allow=${r#*$'\t'}
allow=${allow%%$'\t'*}
check "GET .../42/prov-igjen -> 405 with Allow: POST" test "$(status_of "$r"):$allow" = 405:POST
r=$(req PUT "$p/42/prov-igjen" 'x')
check "PUT .../42/prov-igjen -> 405" test "$(status_of "$r")" = 405
r=$(req GET "$p/prov-igjen/batch")
check "GET .../prov-igjen/batch -> 405" test "$(status_of "$r")" = 405
r=$(req POST "/api/intern/handlinger/instanser/42/prov-igjen")
check "the path without the base path -> 404" test "$(status_of "$r")" = 404
r=$(req POST "/beta/other-no/api/intern/handlinger/instanser/42/prov-igjen")
check "another organisation's base path -> 404" test "$(status_of "$r")" = 404
r=$(req POST "$p/42/prov-igjen/")
check "a trailing slash -> 404" test "$(status_of "$r")" = 404
check "none of the refused requests reached the upstream" test "$(wc -l <"$work/upstream.log")" -eq "$n_before"
# The dead-letter endpoints for ADMIN (README "Dead letters").
a=$base_path/api/intern/admin/instanser/dead-letters
r=$(req GET "$a?status=dead&max_rows=5")
check "GET .../admin/instanser/dead-letters?... -> GET /rpc/dead_letters with the query string" \
	upstream_saw "$r" 'r["method"] == "GET" and r["path"] == "/rpc/dead_letters?status=dead&max_rows=5" and r["headers"]["authorization"] == "Bearer test-token.abc" and "cookie" not in r["headers"]'
r=$(req POST "$a/0042/redrive")
check "POST .../dead-letters/0042/redrive -> POST /rpc/dead_letter_redrive {\"id\": 42}" \
	upstream_saw "$r" 'r["method"] == "POST" and r["path"] == "/rpc/dead_letter_redrive" and r["body"] == "{\"id\": 42}" and r["headers"]["content-type"] == "application/json"'
r=$(req POST "$a/7/discard?x=1")
check "POST .../dead-letters/7/discard -> POST /rpc/dead_letter_discard {\"id\": 7}, no query string" \
	upstream_saw "$r" 'r["path"] == "/rpc/dead_letter_discard" and r["body"] == "{\"id\": 7}"'
n_before=$(wc -l <"$work/upstream.log")
r=$(req POST "$a")
check "POST .../dead-letters -> 405" test "$(status_of "$r")" = 405
r=$(req GET "$a/7/redrive")
check "GET .../dead-letters/7/redrive -> 405" test "$(status_of "$r")" = 405
for bad in abc/redrive 7/requeue %22/discard 7/redrive/ 12345678901234567890/redrive; do
	r=$(req POST "$a/$bad")
	check "POST .../dead-letters/$bad -> 404 from nginx" test "$(status_of "$r")" = 404
done
check "none of the refused admin requests reached the upstream" test "$(wc -l <"$work/upstream.log")" -eq "$n_before"
r=$(req GET "$p/rest/")
check "GET .../rest/ -> PostgREST's / (the OpenAPI document)" upstream_saw "$r" 'r["method"] == "GET" and r["path"] == "/"'
r=$(req GET /healthz)
check "GET /healthz -> 200" test "$(status_of "$r")" = 200

# The actuator (issue 14): {base}/actuator/... -> GET /rpc/<function>,
# without Authorization or Cookie (flyt_api.pre_request needs no token for
# these); not reachable through .../instanser/rest/ (routed from outside).
while read -r path fn accept; do
	r=$(req GET "$base_path/actuator/$path")
	check "GET {base}/actuator/$path -> GET /rpc/$fn, Accept $accept, no Authorization, no Cookie" upstream_saw "$r" \
		'r["method"] == "GET" and r["path"] == "/rpc/'"$fn"'" and r["headers"]["accept"] == "'"$accept"'" and "authorization" not in r["headers"] and "cookie" not in r["headers"]'
done <<'EOF'
health health application/json
health/readiness readiness application/json
health/liveness liveness application/json
prometheus metrics text/plain
EOF
ct=$("$PY" -c 'import http.client, sys; c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5); c.request("GET", sys.argv[2]); print(c.getresponse().getheader("Content-Type"))' \
	"$proxy_port" "$base_path/actuator/prometheus")
check "GET {base}/actuator/prometheus: Content-Type text/plain; version=0.0.4" test "$ct" = 'text/plain; version=0.0.4; charset=utf-8'
n_before=$(wc -l <"$work/upstream.log")
r=$(req POST "$base_path/actuator/health" '{}' application/json)
check "POST {base}/actuator/health -> 405" test "$(status_of "$r")" = 405
for path in rest/rpc/health rest/rpc/readiness rest/rpc/liveness rest/rpc/metrics rest/rpc/health/ rest//rpc/metrics rest/rpc/%68ealth; do
	r=$(req GET "$p/$path")
	check "GET .../instanser/$path -> 404 from nginx (the actuator is not routed from outside)" test "$(status_of "$r")" = 404
done
r=$(req GET "/actuator/health")
check "GET /actuator/health without the base path -> 404" test "$(status_of "$r")" = 404
check "none of these reached the upstream" test "$(wc -l <"$work/upstream.log")" -eq "$n_before"
r=$(req GET "$p/rest/rpc/retry")
check "GET .../rest/rpc/retry still goes to PostgREST" upstream_saw "$r" 'r["path"] == "/rpc/retry"'

# --- 6. Dockerfile -------------------------------------------------------------
df=docker/Dockerfile
check "Dockerfile: FROM postgres:15-bookworm" grep -q '^ARG PG_IMAGE=postgres:15-bookworm$' "$df"
runs=$(awk '/^RUN /{c = substr($0, 5); while (c ~ /\\$/) { sub(/\\$/, "", c); getline l; c = c l } print c}' "$df")
n=0
while IFS= read -r c; do
	n=$((n + 1))
	check "Dockerfile: RUN line $n parses (sh -n)" sh -n -c "$c"
done <<<"$runs"
check "Dockerfile: installs librdkafka1 and libjansson4" grep -q 'librdkafka1' "$df"
for f in $(awk '/^COPY [^-]/{for (i = 2; i < NF; i++) print $i}' "$df"); do
	check "Dockerfile: COPY $f exists" test -e "$f"
done

finish
