#!/usr/bin/env python3
"""A Marathon stand-in for mixd's resolver tests (Python 3 stdlib only).

Serves GET /v2/apps?embed=apps.tasks, GET /v2/pods/::status and the event
stream GET /v2/events (text/event-stream, CRLF framing, a bare CRLF
heartbeat every --heartbeat seconds) on 127.0.0.1, like Marathon 1.5+.

Started as a process (the C tests do this):
    python3 marathon_standin.py --port 0 [--follower] [--apps F] [--pods F]
prints one line "READY <port> <follower port or 0>" and then reads JSON
commands, one per line, on stdin; each is answered with one line
"OK <json>" (or "ERR <message>") on stdout. Imported, StandIn offers the
same commands as methods (StandIn.command(dict)).

Commands ({"cmd": ...}):
  set {apps, pods}           replace the state
  add_task {task}            add/replace a task in its app (task.appId)
  remove_task {taskId}       drop a task from every app
  remove_app {appId}
  event {type, data}         push one event to every open stream
  during_sync {type, data}   push that event while answering the next
                             GET /v2/pods/::status, before the answer
                             (which does not reflect it): the race of an
                             event with a full sync
  raw {text}                 push raw text (already framed) to streams
  replay_sample {}           push the fixture events.txt sample, LF -> CRLF
  mode {mode}                ok | 401 | 500 | malformed | truncated
  events_mode {mode}         ok | 403 | 500: /v2/events alone (an account
                             that may read apps but not events)
  attach_delay {seconds, apps}  the next event stream is answered (200)
                             at once but subscribed that much later (a
                             busy leader); apps, if given, replace the
                             state just before: a change whose event no
                             stream saw
  delay {seconds}            wait that long before answering /v2/apps
  pad {bytes}                /v2/apps answers carry that many more bytes
                             (JSON whitespace): a large cluster's body
  pace {rate, stall_after}   /v2/apps bodies are written at rate bytes/s
                             (in 20 slices a second); with stall_after,
                             nothing more after that many bytes, the
                             connection held open until the next pace
                             command (then closed: a truncated body).
                             rate 0: at once, as before
  down {} / up {}            close the listening socket and every
                             connection / listen again on the same port
  drop_streams {}            close event streams (a Marathon restart)
  silence {on}               streams stay open but send nothing
  heartbeat {interval}       seconds between heartbeats
  auth {basic: "u:p"|null, token: "jwt"|null}   required credentials
  stats {}                   request counts, open streams, auth failures,
                             the last 8 streams' event_type filters
GET /v2/events?event_type=T&... sends only those types, as Marathon does.
  quit {}
With --follower a second server answers every request with 302 to the
leader (the first server), as a Marathon standby does.
"""
import argparse
import base64
import http.server
import json
import os
import queue
import socket
import socketserver
import sys
import threading
import time
from urllib.parse import parse_qs, urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.environ.get("MIXD_FIXTURES",
                          os.path.join(HERE, "..", "fixtures"))
MARATHON = os.path.join(FIXTURES, "marathon")


def load_fixture(name):
    with open(os.path.join(MARATHON, name), "rb") as f:
        return json.loads(f.read())


def real_apps():
    """Apps with tasks composed from the upstream fixtures (see SOURCES.md):
    the nested groups' apps, the 1.4 bridge app and the group app, with the
    /v2/tasks and /v2/apps/{id}/tasks examples attached by appId."""
    apps = []

    def walk(g):
        apps.extend(g.get("apps", []))
        for sub in g.get("groups", []):
            walk(sub)
    walk(load_fixture("v2-groups-nested-response.json"))
    apps.append(load_fixture("v2-app-definition-docker-bridge-1.4.json"))
    apps.extend(load_fixture("v2-apps-list-response.json")["apps"])
    apps.append({"id": "/minecraft/survival-world", "labels": {}})
    tasks = (load_fixture("v2-tasks-list-response.json")["tasks"] +
             load_fixture("v2-app-tasks-response-group-app.json")["tasks"])
    by_id = {a["id"]: a for a in apps}
    for t in tasks:
        a = by_id.get(t["appId"])
        if a is None:  # the examples do not all come from one cluster
            a = by_id[t["appId"]] = {"id": t["appId"], "labels": {}}
            apps.append(a)
        a.setdefault("tasks", []).append(t)
    return apps


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.apps = []
        self.pods = []
        self.mode = "ok"
        self.basic = None
        self.token = None
        self.heartbeat = 10.0
        self.silent = False
        self.streams = []          # queues of open event streams
        self.requests = {}
        self.auth_failures = 0
        self.leader_url = None
        self.during_sync = None    # framed event for the next pods GET
        self.stream_filters = []   # each stream's event_type list
        self.delay = 0.0           # seconds before answering /v2/apps
        self.events_mode = "ok"    # ok | 403 | 500, for /v2/events
        self.attach_delay = None   # {seconds, apps} for the next stream
        self.pad = 0               # extra bytes in /v2/apps answers
        self.pace = None           # {rate, stall_after} for /v2/apps


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # bodies end with the connection
    server_version = "marathon-standin/1.0"

    def log_message(self, fmt, *args):
        pass

    @property
    def st(self):
        return self.server.state

    def send_body(self, code, body, ctype="application/json",
                  truncate=False, pace=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if truncate:
            body = body[:len(body) // 2]
        if pace and pace.get("rate"):
            self.send_paced(body, pace)
            return
        self.wfile.write(body)
        self.wfile.flush()

    def send_paced(self, body, pace):
        st = self.st
        step = max(1, int(float(pace["rate"]) / 20))
        stall = pace.get("stall_after")
        at = 0
        while at < len(body):
            if stall is not None and at >= stall:
                # Stalled: the connection stays open, silent, until
                # the test changes pace (or the stand-in exits).
                while st.pace is pace:
                    time.sleep(0.05)
                return
            n = step if stall is None else min(step, stall - at)
            self.wfile.write(body[at:at + n])
            self.wfile.flush()
            at += n
            time.sleep(0.05)

    def authorized(self):
        st = self.st
        got = self.headers.get("Authorization", "")
        if st.basic is not None:
            want = "Basic " + base64.b64encode(st.basic.encode()).decode()
            if got != want:
                return False
        if st.token is not None and got != "token=" + st.token:
            return False
        return True

    def do_GET(self):
        st = self.st
        path = self.path
        with st.lock:
            key = ("follower:" if self.server.follower else "") + \
                path.split("?")[0]
            st.requests[key] = st.requests.get(key, 0) + 1
        if self.server.follower:
            self.send_response(302)
            self.send_header("Location", st.leader_url + path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not self.authorized():
            with st.lock:
                st.auth_failures += 1
            self.send_body(401, '{"message":"Unauthorized"}')
            return
        mode = st.mode
        if mode == "401":
            self.send_body(401, '{"message":"Unauthorized"}')
            return
        if mode == "500":
            self.send_body(500, '{"message":"boom"}')
            return
        if path.startswith("/v2/events"):
            self.stream()
            return
        if path.startswith("/v2/apps"):
            time.sleep(st.delay)
            with st.lock:
                body = json.dumps({"apps": st.apps})
                pace = st.pace
                if st.pad:
                    body = body[:-1] + " " * st.pad + "}"
        elif path.startswith("/v2/pods/::status"):
            pace = None
            with st.lock:
                body = json.dumps(st.pods)
                held, st.during_sync = st.during_sync, None
                streams = list(st.streams)
            if held is not None:
                for q in streams:
                    q.put(held)
                time.sleep(0.3)  # the event is read before the answer
        else:
            self.send_body(404, '{"message":"not found"}')
            return
        if mode == "malformed":
            body = body.replace("{", "[", 3) + "}}"
        self.send_body(200, body, truncate=(mode == "truncated"),
                       pace=pace)

    def stream(self):
        st = self.st
        if self.headers.get("Accept") != "text/event-stream":
            self.send_body(406, '{"message":"want text/event-stream"}')
            return
        # ?event_type=a&event_type=b: those types only, as Marathon does
        wanted = set(parse_qs(urlparse(self.path).query).get("event_type", []))
        if st.events_mode != "ok":
            self.send_body(int(st.events_mode),
                           '{"message":"not authorized to access events"}')
            return
        with st.lock:
            delay, st.attach_delay = st.attach_delay, None
        q = queue.Queue()
        try:
            # As Marathon: Jetty answers 200 at once; then an actor
            # subscribes the stream, and event_stream_attached is its
            # first event (what comes before that, no stream sees).
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.flush()
            if delay:
                time.sleep(float(delay.get("seconds", 0)))
                if "apps" in delay:
                    with st.lock:
                        st.apps = delay["apps"]
            with st.lock:
                st.stream_filters.append(sorted(wanted))
                st.streams.append(q)
            att = {"remoteAddress": "127.0.0.1",
                   "eventType": "event_stream_attached",
                   "timestamp": "2019-05-01T10:00:00.000Z"}
            if not wanted or "event_stream_attached" in wanted:
                self.wfile.write(("event: event_stream_attached\r\ndata: " +
                                  json.dumps(att) + "\r\n\r\n").encode())
            self.wfile.flush()
            while True:
                try:
                    item = q.get(timeout=st.heartbeat)
                except queue.Empty:
                    item = None
                if item == "close":
                    return
                if st.silent:
                    continue
                if item and wanted and item.startswith("event: ") and \
                        item[7:].split("\r\n", 1)[0] not in wanted:
                    continue
                self.wfile.write(item.encode() if item else b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            return
        finally:
            with st.lock:
                if q in st.streams:
                    st.streams.remove(q)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port, state, follower=False):
        self.state = state
        self.follower = follower
        self.conns = set()
        self.conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), Handler)

    def process_request_thread(self, request, client_address):
        with self.conns_lock:
            self.conns.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.conns_lock:
                self.conns.discard(request)

    def close_all(self):
        with self.conns_lock:
            for c in list(self.conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class StandIn:
    def __init__(self, port=0, follower=False, apps=None, pods=None,
                 heartbeat=10.0):
        self.state = State()
        self.state.heartbeat = heartbeat
        self.state.apps = apps if apps is not None else []
        self.state.pods = pods if pods is not None else []
        self.server = self._serve(port, False)
        self.port = self.server.server_address[1]
        self.state.leader_url = "http://127.0.0.1:%d" % self.port
        self.follower = self._serve(0, True) if follower else None
        self.follower_port = (self.follower.server_address[1]
                              if self.follower else 0)

    def _serve(self, port, follower):
        srv = Server(port, self.state, follower)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        srv.thread = t
        return srv

    def push(self, text):
        with self.state.lock:
            for q in self.state.streams:
                q.put(text)

    def drop_streams(self):
        with self.state.lock:
            for q in self.state.streams:
                q.put("close")

    def command(self, c):
        st = self.state
        cmd = c.get("cmd")
        if cmd == "set":
            with st.lock:
                if "apps" in c:
                    st.apps = c["apps"]
                if "pods" in c:
                    st.pods = c["pods"]
        elif cmd == "load":
            with st.lock:
                if c.get("real"):
                    st.apps = real_apps()
                    st.pods = []
                if "apps" in c:
                    st.apps = load_fixture(c["apps"])["apps"]
                if "pods" in c:
                    st.pods = load_fixture(c["pods"])
        elif cmd == "add_task":
            t = c["task"]
            with st.lock:
                for a in st.apps:
                    if a["id"] == t["appId"]:
                        ts = [x for x in a.get("tasks", [])
                              if x["id"] != t["id"]]
                        a["tasks"] = ts + [t]
        elif cmd == "remove_task":
            with st.lock:
                for a in st.apps:
                    a["tasks"] = [x for x in a.get("tasks", [])
                                  if x["id"] != c["taskId"]]
        elif cmd == "remove_app":
            with st.lock:
                st.apps = [a for a in st.apps if a["id"] != c["appId"]]
        elif cmd in ("event", "during_sync"):
            data = dict(c.get("data", {}))
            data.setdefault("eventType", c["type"])
            text = "event: %s\r\ndata: %s\r\n\r\n" % (c["type"],
                                                      json.dumps(data))
            if cmd == "event":
                self.push(text)
            else:
                with st.lock:
                    st.during_sync = text
        elif cmd == "raw":
            self.push(c["text"])
        elif cmd == "replay_sample":
            with open(os.path.join(MARATHON,
                                   "v2-events-sse-stream-sample.txt")) as f:
                text = f.read()
            self.push(text.replace("\r\n", "\n").replace("\n", "\r\n"))
        elif cmd == "mode":
            st.mode = c["mode"]
        elif cmd == "delay":
            st.delay = float(c["seconds"])
        elif cmd == "pad":
            st.pad = int(c["bytes"])
        elif cmd == "pace":
            with st.lock:
                st.pace = {k: c[k] for k in ("rate", "stall_after")
                           if k in c}
        elif cmd == "events_mode":
            st.events_mode = c["mode"]
        elif cmd == "attach_delay":
            with st.lock:
                st.attach_delay = {k: c[k] for k in ("seconds", "apps")
                                   if k in c}
        elif cmd == "down":
            self.server.shutdown()
            self.server.server_close()
            self.drop_streams()
            self.server.close_all()
        elif cmd == "up":
            self.server = self._serve(self.port, False)
        elif cmd == "drop_streams":
            self.drop_streams()
        elif cmd == "silence":
            st.silent = bool(c.get("on", True))
        elif cmd == "heartbeat":
            st.heartbeat = float(c["interval"])
        elif cmd == "auth":
            st.basic = c.get("basic")
            st.token = c.get("token")
        elif cmd == "stats":
            with st.lock:
                return {"requests": dict(st.requests),
                        "streams": len(st.streams),
                        "stream_filters": st.stream_filters[-8:],
                        "auth_failures": st.auth_failures}
        elif cmd == "quit":
            return {"quit": True}
        else:
            raise ValueError("unknown command %r" % cmd)
        return {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--follower", action="store_true")
    ap.add_argument("--apps", help="fixture file name (marathon/)")
    ap.add_argument("--pods", help="fixture file name (marathon/)")
    ap.add_argument("--real", action="store_true",
                    help="serve apps composed from the upstream fixtures")
    ap.add_argument("--heartbeat", type=float, default=10.0)
    ap.add_argument("--basic")
    ap.add_argument("--token")
    a = ap.parse_args()
    apps = real_apps() if a.real else (
        load_fixture(a.apps)["apps"] if a.apps else [])
    pods = load_fixture(a.pods) if a.pods else []
    s = StandIn(a.port, a.follower, apps, pods, a.heartbeat)
    s.state.basic = a.basic
    s.state.token = a.token
    print("READY %d %d" % (s.port, s.follower_port), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            res = s.command(json.loads(line))
        except Exception as e:  # report, keep serving
            print("ERR %s" % str(e).replace("\n", " "), flush=True)
            continue
        print("OK " + json.dumps(res), flush=True)
        if res.get("quit"):
            break
    os._exit(0)


if __name__ == "__main__":
    main()
