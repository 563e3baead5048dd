"""deploy/ is usable as checked in: Prometheus accepts its configuration and
rules (promtool), every Marathon definition has what Marathon requires, the
pods start mixd with Mixer's command line, the Dockerfile copies files that
exist and installs packages Debian has, the systemd unit verifies, and the
user's config is unchanged.

`python3 test_deploy.py --sync-prometheus-app` rewrites the copies of the
Prometheus files embedded in deploy/marathon/prometheus.json.
"""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import mixdtest as mt
from mixdtest import check

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
PROM_APP = os.path.join(DEPLOY, "marathon", "prometheus.json")
EMBEDDED = {"PROMETHEUS_YML": "prometheus/prometheus.yml",
            "MESH_RULES_YML": "prometheus/rules/mesh.yml"}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def promtool(*args):
    exe = shutil.which("promtool")
    check(exe, "promtool is not installed (Debian package prometheus; make deps)")
    p = subprocess.run([exe, *args], cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    out = p.stdout.decode("utf-8", "replace")
    check(p.returncode == 0, f"promtool {' '.join(args)} failed:\n{out}")
    return out


def test_promtool_check_config(build):
    out = promtool("check", "config", "deploy/prometheus/prometheus.yml")
    # the config names the rules, so check config loads them too
    check("rule files found" in out and "SUCCESS: 0 rule files" not in out,
          f"prometheus.yml loads no rule files:\n{out}")


def test_promtool_check_rules(build):
    rules = sorted(glob.glob(os.path.join(DEPLOY, "prometheus", "rules", "*.yml")))
    check(rules, "no rule files in deploy/prometheus/rules")
    promtool("check", "rules", *[os.path.relpath(r, ROOT) for r in rules])


def test_prometheus_finds_mixd(build):
    """Both scrape jobs discover through Marathon and keep only mixd's ports,
    and the rules cover what the mesh-wide view needs."""
    text = read(os.path.join(DEPLOY, "prometheus", "prometheus.yml")).decode()
    for needle in ("marathon_sd_configs:", "servers:", "refresh_interval:",
                   "__meta_marathon_app", "__meta_marathon_port_index",
                   "rule_files:", "port: 31422", "port: 31093"):
        check(needle in text, f"prometheus.yml lacks {needle}")
    rules = read(os.path.join(DEPLOY, "prometheus", "rules", "mesh.yml")).decode()
    for q in ("0.50", "0.90", "0.99"):
        check(f"histogram_quantile({q}, destination_workload:" in rules,
              f"no p{q[2:]} per destination workload")
    for needle in ("istio_request_duration_seconds_bucket", 'response_code=~"5.."',
                   "destination_workload_namespace", "source_workload",
                   "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"):
        check(needle in rules, f"rules lack {needle}")


# ---- Marathon -----------------------------------------------------------

def need(obj, key, kind, where):
    check(key in obj, f"{where}: missing {key}")
    check(isinstance(obj[key], kind), f"{where}: {key} is {type(obj[key]).__name__}")
    return obj[key]


def check_path_id(pid, where):
    # PathId: absolute, segments of lower-case letters, digits, '-' and '.'
    check(re.fullmatch(r"(/[a-z0-9]([a-z0-9.-]*[a-z0-9])?)+", pid),
          f"{where}: id {pid!r} is not a valid Marathon path id")


def check_app(a, where):
    """Marathon's AppDefinition (RAML types/app.raml): id; cmd, args or a
    container; resources; ports and health checks well-formed."""
    check_path_id(need(a, "id", str, where), where)
    check("cmd" in a or "args" in a or "container" in a,
          f"{where}: an app needs cmd, args or container")
    check(not ("cmd" in a and "args" in a), f"{where}: cmd and args exclude each other")
    for k in ("cpus", "mem"):
        check(need(a, k, (int, float), where) > 0, f"{where}: {k} must be > 0")
    check(need(a, "instances", int, where) >= 0, f"{where}: instances < 0")
    c = a.get("container")
    if c:
        check(need(c, "type", str, where) in ("DOCKER", "MESOS"), f"{where}: container.type")
        if c["type"] == "DOCKER":
            check(need(need(c, "docker", dict, where), "image", str, where),
                  f"{where}: docker.image empty")
        names = set()
        for pm in c.get("portMappings", []):
            check(isinstance(pm.get("containerPort"), int), f"{where}: portMapping without containerPort")
            check(pm.get("protocol", "tcp") in ("tcp", "udp", "udp,tcp", "tcp,udp"),
                  f"{where}: portMapping protocol")
            if "name" in pm:
                check(pm["name"] not in names, f"{where}: port name {pm['name']} twice")
                names.add(pm["name"])
        for v in c.get("volumes", []):
            check("containerPath" in v, f"{where}: volume without containerPath")
    for hc in a.get("healthChecks", []):
        check(hc.get("protocol") in ("HTTP", "HTTPS", "TCP", "COMMAND", "MESOS_HTTP",
                                     "MESOS_HTTPS", "MESOS_TCP"), f"{where}: health check protocol")
        if hc["protocol"] in ("HTTP", "HTTPS", "MESOS_HTTP", "MESOS_HTTPS"):
            check(hc.get("path", "").startswith("/"), f"{where}: HTTP health check without path")
            nports = len(c.get("portMappings", [])) if c else len(a.get("portDefinitions", []))
            check(0 <= hc.get("portIndex", 0) < max(nports, 1), f"{where}: health check portIndex")
    for con in a.get("constraints", []):
        check(isinstance(con, list) and 2 <= len(con) <= 3, f"{where}: constraint {con}")
    for k, v in a.get("env", {}).items():
        check(isinstance(v, (str, dict)), f"{where}: env {k} is not a string")


def check_pod(p, where):
    """Marathon's Pod (RAML types/pod.raml): id, containers with name and
    resources (cpus, mem), endpoints, volumes referenced by volumeMounts, a
    health check naming an endpoint of its container, scaling, placement."""
    check_path_id(need(p, "id", str, where), where)
    containers = need(p, "containers", list, where)
    check(containers, f"{where}: a pod needs at least one container")
    volumes = {v["name"] for v in p.get("volumes", [])}
    names, eps = set(), set()
    for c in containers:
        cw = f"{where}: container {c.get('name')}"
        name = need(c, "name", str, cw)
        check(re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name), f"{cw}: bad name")
        check(name not in names, f"{cw}: name twice")
        names.add(name)
        res = need(c, "resources", dict, cw)
        for k in ("cpus", "mem"):
            check(need(res, k, (int, float), cw) > 0, f"{cw}: resources.{k} must be > 0")
        if "exec" in c:
            check(need(need(c["exec"], "command", dict, cw), "shell", str, cw),
                  f"{cw}: empty command")
        if "image" in c:
            check(c["image"].get("kind") in ("DOCKER", "APPC"), f"{cw}: image.kind")
            check(c["image"].get("id"), f"{cw}: image.id")
        cep = set()
        for e in c.get("endpoints", []):
            check(need(e, "name", str, cw) not in eps, f"{cw}: endpoint {e['name']} twice")
            eps.add(e["name"])
            cep.add(e["name"])
            check(isinstance(e.get("containerPort"), int), f"{cw}: endpoint without containerPort")
            check(isinstance(e.get("hostPort", 0), int), f"{cw}: hostPort")
        for m in c.get("volumeMounts", []):
            check(m.get("name") in volumes, f"{cw}: volumeMount of unknown volume {m.get('name')}")
            check(m.get("mountPath", "").startswith("/"), f"{cw}: mountPath")
        hc = c.get("healthCheck")
        if hc:
            kinds = [k for k in ("http", "tcp", "exec") if k in hc]
            check(len(kinds) == 1, f"{cw}: a health check is one of http, tcp, exec")
            if "http" in hc:
                check(hc["http"].get("endpoint") in cep,
                      f"{cw}: health check endpoint is not one of the container's")
                check(hc["http"].get("path", "").startswith("/"), f"{cw}: health check path")
    nets = p.get("networks", [])
    for n in nets:
        check(n.get("mode") in ("host", "container", "container/bridge"), f"{where}: network mode")
    scaling = p.get("scaling", {"kind": "fixed", "instances": 1})
    check(scaling.get("kind") == "fixed" and isinstance(scaling.get("instances"), int),
          f"{where}: scaling")
    for con in p.get("scheduling", {}).get("placement", {}).get("constraints", []):
        check(con.get("fieldName") and con.get("operator") in
              ("UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS"),
              f"{where}: constraint {con}")


def marathon_files():
    files = sorted(glob.glob(os.path.join(DEPLOY, "**", "*.json"), recursive=True))
    check(files, "no Marathon JSON in deploy/")
    return files


def load_json(path):
    try:
        return json.loads(read(path))
    except ValueError as e:
        raise AssertionError(f"{os.path.relpath(path, ROOT)}: not JSON: {e}") from None


def test_marathon_definitions(build):
    kinds = {}
    for f in marathon_files():
        d = load_json(f)
        where = os.path.relpath(f, ROOT)
        check(isinstance(d, dict), f"{where}: not an object")
        if "containers" in d:
            check_pod(d, where)
            kinds[os.path.basename(f)] = "pod"
        else:
            check_app(d, where)
            kinds[os.path.basename(f)] = "app"
    for name, kind in (("mixd-pod.json", "pod"), ("mixd-per-agent.json", "pod"),
                       ("prometheus.json", "app")):
        check(kinds.get(name) == kind, f"deploy/marathon/{name} should be a Marathon {kind}")


def mixd_container(pod):
    return next(c for c in pod["containers"] if c["name"] == "mixd")


def check_ring_memory_fits(name, argv, mem):
    """The producers' rings mixd may map (--max-ring-memory, MiB) leave
    256 MiB of the container's memory for mixd's own."""
    check("--max-ring-memory" in argv, f"{name}: no --max-ring-memory: the "
          f"default (4 GiB of rings) does not fit {mem} MiB")
    rings = int(argv[argv.index("--max-ring-memory") + 1])
    check(rings + 256 <= mem, f"{name}: {rings} MiB of rings in {mem} MiB")


def test_mixd_pods(build):
    """The pods run mixd with Mixer's command line next to the proxy, share
    the socket volume, expose 9091/9093/42422 on host ports and check
    /healthz on 9093; the app and the pods give mixd the memory its ring
    limit needs."""
    app = load_json(os.path.join(DEPLOY, "marathon", "mixd-app.json"))
    check_ring_memory_fits("mixd-app.json", shlex.split(app["cmd"]), app["mem"])
    for name in ("mixd-pod.json", "mixd-per-agent.json"):
        pod = load_json(os.path.join(DEPLOY, "marathon", name))
        m = mixd_container(pod)
        argv = shlex.split(m["exec"]["command"]["shell"])
        check_ring_memory_fits(name, argv, m["resources"]["mem"])
        check(argv[0].endswith("/mixd") and argv[1] == "server", f"{name}: {argv}")
        for flag in ("--address", "unix:///sock/mixer.socket",
                     "--configStoreURL=fs:///etc/mixd/config", "--configDefaultNamespace=default"):
            check(flag in argv, f"{name}: mixd command lacks {flag}: {argv}")
        ports = {e["containerPort"]: e for e in m["endpoints"]}
        check(set(ports) == {9091, 9093, 42422}, f"{name}: endpoints {sorted(ports)}")
        for e in ports.values():
            check(e["hostPort"] > 0, f"{name}: endpoint {e['name']} has no host port")
        hc = m["healthCheck"]["http"]
        check(ports[9093]["name"] == hc["endpoint"] and hc["path"] == "/healthz",
              f"{name}: health check {hc}")
        proxy = [c for c in pod["containers"] if c["name"] != "mixd"]
        check(len(proxy) == 1 and "pilot-agent proxy" in proxy[0]["exec"]["command"]["shell"],
              f"{name}: no proxy sidecar")
        for c in pod["containers"]:
            check({"name": "uds-socket", "mountPath": "/sock"} in c["volumeMounts"],
                  f"{name}: {c['name']} does not mount the socket volume at /sock")
    pa = load_json(os.path.join(DEPLOY, "marathon", "mixd-per-agent.json"))
    check({"fieldName": "hostname", "operator": "UNIQUE"} in
          pa["scheduling"]["placement"]["constraints"], "per-agent pod is not hostname UNIQUE")
    check(pa["scaling"]["instances"] >= 1, "per-agent pod has no instances")


def test_prometheus_app_embeds_deploy_files(build):
    app = load_json(PROM_APP)
    for var, rel in EMBEDDED.items():
        check(app["env"].get(var) == read(os.path.join(DEPLOY, rel)).decode(),
              f"prometheus.json's {var} differs from deploy/{rel}: run "
              f"python3 tests/integration/test_deploy.py --sync-prometheus-app")
    check("--config.file=" in app["cmd"], "prometheus.json does not pass --config.file")


# ---- Dockerfile, systemd, config ---------------------------------------------

def dockerfile_instructions():
    lines, cur = [], ""
    for raw in read(os.path.join(DEPLOY, "Dockerfile")).decode().splitlines():
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):  # comment lines inside a continuation
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        lines.append(cur + s)
        cur = ""
    check(not cur, "Dockerfile ends inside a continued line")
    return [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]


def test_dockerfile(build):
    ins = dockerfile_instructions()
    known = {"FROM", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD",
             "ENV", "ARG", "LABEL"}
    for op, _ in ins:
        check(op in known, f"Dockerfile: unknown instruction {op}")
    froms = [a for op, a in ins if op == "FROM"]
    check(len(froms) >= 2 and all(f.split()[0].startswith("debian:bookworm") for f in froms),
          f"Dockerfile is not multi-stage on Debian 12: {froms}")
    stages = {f.split()[2] for f in froms if len(f.split()) == 3 and f.split()[1].upper() == "AS"}
    pkgs = set()
    for op, a in ins:
        if op == "COPY":
            words = a.split()
            src = [w for w in words[:-1] if not w.startswith("--")]
            frm = [w for w in words if w.startswith("--from=")]
            if frm:
                check(frm[0][len("--from="):] in stages, f"Dockerfile: COPY {frm[0]} of no stage")
                continue
            for s in src:
                check(os.path.exists(os.path.join(ROOT, s)), f"Dockerfile: COPY source {s} does not exist")
        if op == "RUN" and "apt-get install" in a:
            for part in a.split("&&"):
                if "apt-get install" in part:
                    pkgs |= {w for w in part.split("install", 1)[1].split() if not w.startswith("-")}
    check(pkgs, "Dockerfile installs no packages")
    out = subprocess.run(["apt-cache", "policy", *sorted(pkgs)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=120).stdout.decode()
    # one section per known package: "name:" at column 0, then its Candidate
    candidate = dict(re.findall(r"^(\S+):\n(?:[ \t].*\n)*?\s+Candidate:\s*(\S+)", out, re.M))
    for p in sorted(pkgs):
        check(candidate.get(p, "(none)") != "(none)", f"Dockerfile: Debian has no package {p}")
    exposed = {w for op, a in ins if op == "EXPOSE" for w in a.split()}
    check({"9091", "9093", "42422"} <= exposed, f"Dockerfile exposes {exposed}")
    users = [a for op, a in ins if op == "USER"]
    check(users and users[-1].split(":")[0] not in ("0", "root"), "image runs as root")
    ep = [a for op, a in ins if op == "ENTRYPOINT"]
    check(ep and json.loads(ep[-1])[0].endswith("/mixd"), f"ENTRYPOINT {ep}")


def test_systemd_unit(build):
    unit = os.path.join(DEPLOY, "systemd", "mixd.service")
    text = read(unit).decode()
    for needle in ("ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                   "ProtectSystem=strict", "RuntimeDirectory=mixd"):
        check(needle in text, f"mixd.service lacks {needle}")
    check("DynamicUser=yes" in text or re.search(r"^User=\S+", text, re.M),
          "mixd.service runs as root")


def test_systemd_analyze_verify(build):
    exe = shutil.which("systemd-analyze")
    unit = os.path.join(DEPLOY, "systemd", "mixd.service")
    text = read(unit).decode()
    mixd = os.path.join(os.path.abspath(build), "mixd")
    check(os.access(mixd, os.X_OK), f"{mixd} is missing: build mixd first")
    with tempfile.TemporaryDirectory() as d:
        # verify wants ExecStart's binary to exist: point it at the build's
        path = os.path.join(d, "mixd.service")
        with open(path, "w") as f:
            f.write(text.replace("/usr/local/bin/mixd", mixd))
        p = subprocess.run([exe, "verify", path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        # verify exits 0 on ignored directives; any word about the unit is a fault
        check(p.returncode == 0 and "mixd.service" not in out,
              f"systemd-analyze verify mixd.service:\n{out}")


def test_seed_config_unchanged(build):
    check(read(os.path.join(DEPLOY, "config", "mixer-seed.yaml")) ==
          read(os.path.join(ROOT, "tests", "fixtures", "config", "mixer-seed.yaml")),
          "deploy/config/mixer-seed.yaml differs from the user's file")


def test_secrets_variant(build):
    seed = read(os.path.join(DEPLOY, "config", "mixer-seed.yaml")).decode().splitlines()
    env = read(os.path.join(DEPLOY, "config", "mixer-secrets-env.yaml")).decode().splitlines()
    check(len(seed) == len(env), "the variant has other lines than the seed")
    diff = [(a, b) for a, b in zip(seed, env) if a != b]
    check([b.strip() for _, b in diff] == ["http_basic_auth_user: ${MARATHON_USER}",
                                          "http_basic_auth_password: ${MARATHON_PASSWORD}"],
          f"the variant differs in other ways: {diff}")


def check_man_page(page_path, flags, helptext):
    """@page_path documents every option in @flags (and none that
    @helptext lacks), and groff formats it without a warning."""
    name = os.path.basename(page_path)
    page = read(page_path).decode()
    documented = set(re.findall(r"\\-\\-([A-Za-z\\-]+)", page))
    documented = {f.replace("\\-", "-") for f in documented}
    missing = flags - documented
    check(not missing, f"{name} lacks {sorted(missing)}")
    extra = {f for f in documented - flags if f not in helptext}
    check(not extra, f"{name} documents options its program lacks: {sorted(extra)}")
    groff = shutil.which("groff")
    check(groff, "groff is not installed (Debian package groff-base)")
    g = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", page_path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    check(g.returncode == 0 and not g.stderr, f"groff {name}: {g.stderr.decode()}")


def help_of(build, program):
    p = subprocess.run([os.path.join(build, program), "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10)
    check(p.returncode == 0, f"{program} --help exited {p.returncode}")
    return p.stdout.decode()


def test_man_page(build):
    """deploy/man/mixd.8 documents every option `mixd --help` lists (and
    no option mixd lacks), and groff formats it without a warning; so do
    mixd-report.1 and mixd-loadgen.1 for their programs."""
    helptext = help_of(build, "mixd")
    listed = helptext.split("Accepted for compatibility")[0]
    flags = set(re.findall(r"^  --([A-Za-z-]+)", listed, re.M))
    flags |= set(re.findall(r"Also spelled --([A-Za-z-]+)", listed))
    check(len(flags) >= 15, f"parsed only {sorted(flags)} from mixd --help")
    check_man_page(os.path.join(DEPLOY, "man", "mixd.8"), flags, helptext)
    for program, least in (("mixd-report", 14), ("mixd-loadgen", 12)):
        helptext = help_of(build, program)
        flags = set(re.findall(r"^  (?:-[A-Za-z], )?\s*--([A-Za-z-]+)", helptext, re.M))
        check(len(flags) >= least, f"parsed only {sorted(flags)} from {program} --help")
        check_man_page(os.path.join(DEPLOY, "man", program + ".1"), flags, helptext)


def sync_prometheus_app():
    with open(PROM_APP) as f:
        app = json.load(f)
    for var, rel in EMBEDDED.items():
        app["env"][var] = read(os.path.join(DEPLOY, rel)).decode()
    with open(PROM_APP, "w") as f:
        json.dump(app, f, indent=2)
        f.write("\n")
    print(f"rewrote {os.path.relpath(PROM_APP, ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--sync-prometheus-app"]:
        sync_prometheus_app()
        sys.exit(0)
    tests = [test_promtool_check_config, test_promtool_check_rules, test_prometheus_finds_mixd,
             test_marathon_definitions, test_mixd_pods, test_prometheus_app_embeds_deploy_files,
             test_dockerfile, test_systemd_unit, test_seed_config_unchanged,
             test_secrets_variant, test_man_page]
    if shutil.which("systemd-analyze"):
        tests.append(test_systemd_analyze_verify)
    else:
        print("note: systemd-analyze is absent: skipping test_systemd_analyze_verify "
              "(not counted as passed)", flush=True)
    mt.main(tests)
