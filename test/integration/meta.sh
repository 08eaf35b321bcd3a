#!/usr/bin/env bash
#
# META.json is a valid PGXN distribution description (meta-spec 1.0.0) and
# agrees with the control file and the install scripts.
set -euo pipefail
cd "$(dirname "$0")/../.."

python3 - <<'PY'
import json, os, re, sys

passed = failed = 0
def check(cond, what):
    global passed, failed
    if cond:
        passed += 1; print("ok -", what)
    else:
        failed += 1; print("not ok -", what)

semver = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z-]+)?$")
try:
    meta = json.load(open("META.json"))
    check(True, "META.json is JSON")
except Exception as e:
    check(False, f"META.json is JSON: {e}")
    print(f"{passed} passed, {failed} failed"); sys.exit(1)

for key in ("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec"):
    check(key in meta and meta[key], f"required key {key}")
check(meta.get("meta-spec", {}).get("version") == "1.0.0", "meta-spec 1.0.0")
check(bool(semver.match(meta.get("version", ""))), "version is semantic")
check(meta.get("license") in ("mit", "postgresql", "bsd", "apache_2_0", "gpl_3", "restricted"), "license is a PGXN license name")
maint = meta.get("maintainer")
check(isinstance(maint, (str, list)) and maint, "maintainer given")

control = open("flyt_instance.control").read()
default = re.search(r"default_version\s*=\s*'([^']+)'", control).group(1)
check(meta["version"].startswith(default + "."), f"version {meta['version']} matches default_version {default}")

prov = meta.get("provides", {}).get("flyt_instance", {})
check(prov.get("version") == meta["version"], "provides.flyt_instance.version = version")
check(os.path.isfile(prov.get("file", "")), f"provides.flyt_instance.file {prov.get('file')} exists")
check(prov.get("file") == f"sql/flyt_instance--{default}.sql", "provides the current install script")
check(bool(prov.get("abstract")), "provides.flyt_instance.abstract")

req = meta.get("prereqs", {}).get("runtime", {}).get("requires", {})
check(req.get("PostgreSQL", "").startswith("15"), "requires PostgreSQL >= 15")
for lib in ("librdkafka", "jansson"):
    check(lib in req, f"requires {lib}")
for k, v in req.items():
    check(bool(semver.match(v)), f"prereq {k} version {v} is semantic")

# every upgrade step between shipped versions has a script
versions = sorted({m.group(1) for f in os.listdir("sql") if (m := re.match(r"flyt_instance--(\d+\.\d+)\.sql$", f))},
                  key=lambda v: [int(x) for x in v.split(".")])
for a, b in zip(versions, versions[1:]):
    check(os.path.isfile(f"sql/flyt_instance--{a}--{b}.sql"), f"upgrade script {a} -> {b}")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
