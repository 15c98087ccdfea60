#!/usr/bin/env python3
"""The image's software bill of materials: every Rust crate compiled into the `tocsin` binary
(its normal dependencies, from `cargo metadata --locked`, for this platform), as CycloneDX 1.5
JSON on stdout. Usage: sbom.py <version>"""
import json, subprocess, sys

meta = json.loads(subprocess.run(
    ["cargo", "metadata", "--locked", "--format-version", "1",
     "--filter-platform", "x86_64-unknown-linux-gnu"],
    check=True, capture_output=True, text=True).stdout)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = next(p["id"] for p in meta["packages"] if p["name"] == "tocsin")
seen, todo = set(), [root]
while todo:  # the closure of normal (not dev, not build) dependencies
    pid = todo.pop()
    if pid in seen:
        continue
    seen.add(pid)
    for dep in nodes[pid]["deps"]:
        if any(k["kind"] is None for k in dep["dep_kinds"]):
            todo.append(dep["pkg"])

def component(p):
    c = {"type": "library", "bom-ref": p["id"], "name": p["name"], "version": p["version"],
         "purl": f"pkg:cargo/{p['name']}@{p['version']}"}
    if p.get("license"):
        c["licenses"] = [{"expression": p["license"]}]
    if p.get("source") is None:
        c["type"] = "application" if p["id"] == root else "library"
    return c

deps = sorted((packages[i] for i in seen if i != root), key=lambda p: (p["name"], p["version"]))
bom = {
    "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
    "metadata": {"component": {**component(packages[root]), "type": "application",
                               "version": sys.argv[1] if len(sys.argv) > 1 else packages[root]["version"]}},
    "components": [component(p) for p in deps],
}
json.dump(bom, sys.stdout, indent=1)
print()
