#!/usr/bin/env python3
"""client.py: the black-box client of tests/serve/test_serve.sh (Python standard library only).

  client.py compare PORT REQUESTS REPLIES [TOKEN]  POST each line of REQUESTS to /v1/score; every
                                               reply body must equal that line of REPLIES, byte
                                               for byte, with status 200
  client.py bad PORT                           the bad-request table: each status and message
  client.py load PORT REQUESTS SECONDS OUT     keep 4 keep-alive connections busy; write a JSON
                                               summary (statuses, errors, versions, cold starts)
  client.py slow PORT TIMEOUT [TOKEN]          clients that stall in their headers or body are cut
                                               off after about TIMEOUT seconds
  client.py call PORT METHOD PATH [BODY] [TOKEN]   one request: prints "STATUS BODY"
  client.py gen SCHEMA CSV N MAXC SEED         request lines from a log (every 5th task unknown)
Exit status 0 when every check passed; failures are printed one a line.
"""
import csv
import http.client
import json
import random
import socket
import sys
import threading
import time


def call(port, method, path, body=None, token=None, headers=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    h.update(headers or {})
    if isinstance(body, str):
        body = body.encode()
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    if conn is None:
        c.close()
    return r.status, data


def gen(schema_path, csv_path, n, maxc, seed):
    schema = json.load(open(schema_path))
    rows = list(csv.DictReader(open(csv_path)))
    rnd = random.Random(seed)
    by = {}
    for r in rows:
        by.setdefault(r[schema["task"][0]], []).append(r)
    users = sorted(by)
    for i in range(n):
        known = i % 5 != 0
        u = rnd.choice(users) if known else str(900000 + i)
        src = by[u] if known else by[rnd.choice(users)]
        cands = []
        for k in range(rnd.randint(1, maxc)):
            r = rnd.choice(src)
            dense = [float(r[d]) for d in schema["dense"]]
            cat = {x["column"]: int(r[x["column"]]) for x in schema["categorical"]}
            if k % 3 == 1:
                cands.append({"dense": dict(zip(schema["dense"], dense)), "categorical": cat})
            elif k % 3 == 2:
                cands.append({"categorical": [str(cat[x["column"]]) for x in schema["categorical"]], "dense": dense})
            else:
                cands.append({"dense": dense, "categorical": cat})
        latest = max(src, key=lambda r: float(r[schema["time"]]))
        meta = [float(latest[m]) for m in schema["meta"]]
        req = {"task": {schema["task"][0]: u if i % 3 else int(u)},
               "meta": meta if i % 2 else dict(zip(schema["meta"], meta)), "candidates": cands}
        print(json.dumps(req, separators=(",", ":") if i % 4 else (", ", ": ")))


def compare(port, reqs, reps, token=None):
    fails = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    lines = [l for l in open(reqs, "rb").read().split(b"\n") if l.strip()]
    want = [l for l in open(reps, "rb").read().split(b"\n") if l]
    if len(lines) != len(want):
        print("FAIL: %d requests but %d replies in %s" % (len(lines), len(want), reps))
        return 1
    for i, (q, w) in enumerate(zip(lines, want)):
        st, got = call(port, "POST", "/v1/score", q, token=token, conn=conn)
        if st != 200 or got != w:
            fails += 1
            if fails <= 3:
                print("FAIL: line %d: status %d\n  server: %s\n  score:  %s" % (i + 1, st, got[:300], w[:300]))
    conn.close()
    print("compared %d replies, %d differ" % (len(lines), fails))
    return 1 if fails else 0


OK_CAND = {"dense": [0.1] * 9, "categorical": {"item_id": 7, "channel": 1}}
META = [0.5, 0, 0, 0, 1, 0, 0, 0, 0.3]


def body(**kw):
    b = {"task": {"user_id": "42"}, "meta": META, "candidates": [OK_CAND]}
    for k, v in kw.items():
        if v is None:
            b.pop(k)
        else:
            b[k] = v
    return json.dumps(b)


# (what, method, path, body, status, field, words in the message)
TABLE = [
    ("malformed JSON", "POST", "/v1/score", '{"task": {"user_id": "42"}, ', 400, "body", "malformed JSON"),
    ("empty body", "POST", "/v1/score", "", 400, "body", "expected a JSON object"),
    ("not an object", "POST", "/v1/score", "[1, 2]", 400, "body", "expected a JSON object"),
    ("trailing garbage", "POST", "/v1/score", body() + " x", 400, "body", "more after the object"),
    ("trailing comma", "POST", "/v1/score", body()[:-1] + ",}", 400, "body", "malformed JSON"),
    ("task is a string", "POST", "/v1/score", body(task="42"), 400, "task", "expected an object"),
    ("task missing", "POST", "/v1/score", body(task=None), 400, "task", "missing"),
    ("task column missing", "POST", "/v1/score", body(task={}), 400, "task.user_id", "missing"),
    ("task column unknown", "POST", "/v1/score", body(task={"user_id": "1", "uid": 2}), 400, "task.uid", "unknown field"),
    ("task value a boolean", "POST", "/v1/score", body(task={"user_id": True}), 400, "task.user_id", "a boolean"),
    ("task value a fraction", "POST", "/v1/score", body(task={"user_id": 4.5}), 400, "task.user_id", "expected a string or an integer"),
    ("meta missing", "POST", "/v1/score", body(meta=None), 400, "meta", "missing"),
    ("meta too short", "POST", "/v1/score", body(meta=META[:8]), 400, "meta", "expected 9 numbers"),
    ("meta too long", "POST", "/v1/score", body(meta=META + [1]), 400, "meta", "got more"),
    ("meta unknown name", "POST", "/v1/score", body(meta={"age": 1}), 400, "meta.age", "unknown field"),
    ("meta a string value", "POST", "/v1/score", body(meta=META[:3] + ["x"] + META[4:]), 400, "meta[3]", "expected a number"),
    ("candidates missing", "POST", "/v1/score", body(candidates=None), 400, "candidates", "missing"),
    ("candidates not an array", "POST", "/v1/score", body(candidates={"a": 1}), 400, "candidates", "expected an array"),
    ("no candidates", "POST", "/v1/score", body(candidates=[]), 400, "candidates", "no candidates"),
    ("dense count", "POST", "/v1/score", body(candidates=[OK_CAND, {"dense": [0.1] * 8, "categorical": [1, 2]}]), 400,
     "candidates[1].dense", "expected 9 numbers"),
    ("dense wrong type", "POST", "/v1/score", body(candidates=[{"dense": [0.1, 0.2, "x"] + [0.1] * 6, "categorical": [1, 2]}]),
     400, "candidates[0].dense[2]", "expected a number, got a string"),
    ("dense null", "POST", "/v1/score", body(candidates=[{"dense": [None] * 9, "categorical": [1, 2]}]), 400,
     "candidates[0].dense[0]", "got null"),
    ("dense NaN", "POST", "/v1/score", '{"task": {"user_id": "1"}, "meta": %s, "candidates": [{"dense": [NaN, 1, 1, 1, 1, 1, 1, 1, 1], "categorical": [1, 2]}]}' % json.dumps(META),
     400, "candidates[0].dense[0]", "NaN"),
    ("dense Infinity", "POST", "/v1/score", '{"task": {"user_id": "1"}, "meta": %s, "candidates": [{"dense": [1, -Infinity, 1, 1, 1, 1, 1, 1, 1], "categorical": [1, 2]}]}' % json.dumps(META),
     400, "candidates[0].dense[1]", "NaN or Infinity"),
    ("dense past float", "POST", "/v1/score", body(candidates=[{"dense": [1e39] + [0] * 8, "categorical": [1, 2]}]), 400,
     "candidates[0].dense[0]", "range of a float"),
    ("dense past double", "POST", "/v1/score", '{"task": {"user_id": "1"}, "meta": %s, "candidates": [{"dense": [1e999, 1, 1, 1, 1, 1, 1, 1, 1], "categorical": [1, 2]}]}' % json.dumps(META),
     400, "candidates[0].dense[0]", "out of range"),
    ("dense unknown name", "POST", "/v1/score", body(candidates=[{"dense": {"nope": 1}, "categorical": [1, 2]}]), 400,
     "candidates[0].dense.nope", "unknown field"),
    ("dense name missing", "POST", "/v1/score",
     body(candidates=[{"dense": {n: 1 for n in ["i_f0", "i_f1", "i_f2", "i_f4", "i_f5", "i_f6", "i_f7", "ctx_hour"]},
                       "categorical": [1, 2]}]), 400, "candidates[0].dense.i_f3", "missing"),
    ("categorical a fraction", "POST", "/v1/score", body(candidates=[{"dense": [0] * 9, "categorical": {"item_id": 7.5, "channel": 1}}]),
     400, "candidates[0].categorical.item_id", "fraction"),
    ("categorical column missing", "POST", "/v1/score", body(candidates=[{"dense": [0] * 9, "categorical": {"item_id": 7}}]),
     400, "candidates[0].categorical.channel", "missing"),
    ("categorical missing", "POST", "/v1/score", body(candidates=[{"dense": [0] * 9}]), 400, "candidates[0]", "missing \"categorical\""),
    ("candidate unknown field", "POST", "/v1/score", body(candidates=[dict(OK_CAND, score=1)]), 400, "candidates[0].score", "unknown field"),
    ("unknown top-level field", "POST", "/v1/score", body(extra=1), 400, "extra", "unknown field"),
    ("duplicate field", "POST", "/v1/score", '{"task": {"user_id": "1"}, "task": {"user_id": "2"}}', 400, "task", "given twice"),
    ("control character", "POST", "/v1/score", '{"task": {"user_id": "a\x01b"}}', 400, "task.user_id", "control character"),
    ("bad UTF-8", "POST", "/v1/score", b'{"task": {"user_id": "a\xff"}}', 400, "task.user_id", "UTF-8"),
    ("lone surrogate", "POST", "/v1/score", '{"task": {"user_id": "\\ud800"}}', 400, "task.user_id", "surrogate"),
    ("leading zero", "POST", "/v1/score", body(candidates=[{"dense": [0] * 9, "categorical": [1, 2]}]).replace('[0, 0', '[01, 0', 1), 400,
     "candidates[0].dense[0]", "malformed JSON"),
    ("deep nesting", "POST", "/v1/score", '{"task": ' + "[" * 100000 + "]" * 100000 + "}", 400, "task", "expected an object"),
    ("too many candidates", "POST", "/v1/score", body(candidates=[OK_CAND] * 1001), 413, "candidates", "more than 1000"),
    ("body too large", "POST", "/v1/score", "{" + " " * (1 << 20) + "}", 413, "body", "over the limit"),
    ("embedding: unknown field", "POST", "/v1/embedding", '{"task": {"user_id": "1"}, "meta": []}', 400, "meta", "unknown field"),
    ("embedding: unknown task", "POST", "/v1/embedding", '{"task": {"user_id": "no-such-task"}}', 404, "task", "no stored embedding"),
    ("wrong method", "GET", "/v1/score", None, 405, "", "takes POST"),
    ("unknown path", "GET", "/nope", None, 404, "", "no such endpoint"),
]


def raw_post(port, path, b):
    """POST with a raw socket that keeps reading when the server answers (and closes) before the
    body is all sent, as it does at once for a Content-Length over --max-body."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
              % (path.encode(), len(b)))
    try:
        s.sendall(b)
    except OSError:
        pass
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                data.split(b"Content-Length: ")[1].split(b"\r\n")[0]):
            got = s.recv(65536)
            if not got:
                break
            data += got
    except (OSError, IndexError, ValueError):
        pass
    s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else -1, payload


def bad(port):
    fails = 0
    for what, method, path, b, status, field, words in TABLE:
        try:
            if b is not None and len(b) > (1 << 20):
                st, data = raw_post(port, path, b.encode())
            else:
                st, data = call(port, method, path, b)
            try:
                reply = json.loads(data)
            except ValueError:
                reply = {}
            ok = st == status and reply.get("field") == field and words in reply.get("error", "") and \
                reply.get("error", "").startswith(field + ": " if field else "")
        except Exception as e:  # a dropped connection is a failure too
            ok, st, data = False, -1, repr(e).encode()
        if not ok:
            fails += 1
            print("FAIL: %s: want %d %s (%s), got %d %s" % (what, status, field, words, st, data[:200]))
    # a chunked body over the limit: read as it streams, 413 at its end
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.putrequest("POST", "/v1/score")
    c.putheader("Transfer-Encoding", "chunked")
    c.putheader("Content-Type", "application/json")
    c.endheaders()
    chunk = b"{" + b" " * 65536
    try:
        for _ in range(20):
            c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            chunk = b" " * 65536
        c.send(b"1\r\n}\r\n0\r\n\r\n")
        r = c.getresponse()
        st, data = r.status, r.read()
    except Exception as e:
        st, data = -1, repr(e).encode()
    c.close()
    if st != 413 or b"over the limit" not in data:
        fails += 1
        print("FAIL: chunked body too large: got %d %s" % (st, data[:200]))
    st, _ = call(port, "GET", "/healthz")
    if st != 200:
        fails += 1
        print("FAIL: the server does not answer after the table")
    print("bad-request table: %d cases, %d failed" % (len(TABLE) + 1, fails))
    return 1 if fails else 0


def load(port, reqs, seconds, out):
    lines = [l for l in open(reqs, "rb").read().split(b"\n") if l.strip()]
    stats = {"requests": 0, "status": {}, "errors": [], "versions": {}, "cold": 0, "reasons": {}}
    lock = threading.Lock()
    stop = time.time() + seconds

    def worker(k):
        conn = None
        i = k
        while time.time() < stop:
            q = lines[i % len(lines)]
            i += 4
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                st, data = call(port, "POST", "/v1/score", q, conn=conn)
                rep = json.loads(data) if st == 200 else {}
                with lock:
                    stats["requests"] += 1
                    stats["status"][str(st)] = stats["status"].get(str(st), 0) + 1
                    v = str(rep.get("embedding_version"))
                    stats["versions"][v] = stats["versions"].get(v, 0) + 1
                    if rep.get("cold_start"):
                        stats["cold"] += 1
                        r = rep.get("cold_start_reason")
                        stats["reasons"][r] = stats["reasons"].get(r, 0) + 1
            except Exception as e:
                with lock:
                    stats["errors"].append(repr(e))
                if conn:
                    conn.close()
                conn = None
        if conn:
            conn.close()

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    json.dump(stats, open(out, "w"))
    print(json.dumps({k: v for k, v in stats.items() if k != "errors"}), "errors:", len(stats["errors"]),
          stats["errors"][:3])
    return 0


def slow(port, timeout, token=None):
    auth = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""
    ok = True
    for what, msg in [("in its headers", b"POST /v1/score HTTP/1.1\r\nHost: x\r\n"),
                      ("in its body", b"POST /v1/score HTTP/1.1\r\nHost: x\r\n" + auth +
                       b"Content-Length: 100\r\n\r\n{\"task\"")]:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(msg)
        t0 = time.time()
        s.settimeout(timeout + 10)
        try:
            data = s.recv(4096)
        except OSError:
            data = b"?"
        took = time.time() - t0
        s.close()
        cut = (data == b"" or data.startswith(b"HTTP/1.1 408")) and timeout - 0.5 <= took <= timeout + 5
        ok = ok and cut
        print("a client stalled %s: cut off after %.1f s (%r)" % (what, took, data[:40]))
    st, _ = call(port, "GET", "/healthz")
    return 0 if ok and st == 200 else 1


def main():
    a = sys.argv[1:]
    if a[0] == "compare":
        return compare(int(a[1]), a[2], a[3], a[4] if len(a) > 4 else None)
    if a[0] == "bad":
        return bad(int(a[1]))
    if a[0] == "load":
        return load(int(a[1]), a[2], float(a[3]), a[4])
    if a[0] == "slow":
        return slow(int(a[1]), float(a[2]), a[3] if len(a) > 3 else None)
    if a[0] == "call":
        st, data = call(int(a[1]), a[2], a[3], a[4] if len(a) > 4 and a[4] != "-" else None,
                        token=a[5] if len(a) > 5 else None)
        sys.stdout.write("%d %s\n" % (st, data.decode("utf-8", "replace")))
        return 0
    if a[0] == "gen":
        gen(a[1], a[2], int(a[3]), int(a[4]), int(a[5]))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
