#!/usr/bin/env python3
"""The unit check of bench/soak.py's judgement and mix (TAP; make check runs
it; the soak itself never runs under make): synthetic samples that grow
beyond the bound fail, samples within it, growth during the warm-up and
connection churn pass; the CSV reads back as written; the mix is 8 GETs to
2 POSTs with one order in 20 over the card's limit."""

import asyncio
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soak  # noqa: E402

n = 0
failed = 0


def check(ok, what):
    global n, failed
    n += 1
    failed += not ok
    print("%s %d - %s" % ("ok" if ok else "not ok", n, what))


def rows(name, rss, fds, tcp, seconds=600):
    """Samples every 10 s; rss, fds, tcp: functions of the time."""
    return [(t, name, 1, rss(t), fds(t), tcp(t), "", "", "", "", "") for t in range(10, seconds + 1, 10)]


def verdict(samples, seconds=600):
    ok, v, _ = soak.judge(samples, seconds)
    return ok, v[0][2]


MIB = 1024
flat = rows("gateway", lambda t: 12 * MIB, lambda t: 40, lambda t: 14)
check(verdict(flat)[0], "flat RSS and fds pass")
check(not verdict(rows("gateway", lambda t: 12 * MIB + 9 * t, lambda t: 40, lambda t: 14))[0],
      "RSS growing 9 kB/s (+4.7 MiB after warm-up, over 4 MiB) fails")
check(verdict(rows("gateway", lambda t: 12 * MIB + 7 * t, lambda t: 40, lambda t: 14))[0],
      "RSS growing 7 kB/s (+3.7 MiB) passes: under 4 MiB")
check(not verdict(rows("big", lambda t: 100 * MIB + 25 * t, lambda t: 40, lambda t: 14))[0],
      "on 100 MiB the bound is +10%: +12.5 MiB fails")
check(verdict(rows("big", lambda t: 100 * MIB + 15 * t, lambda t: 40, lambda t: 14))[0],
      "on 100 MiB the bound is +10%: +7.5 MiB (over 4 MiB) passes")
check(verdict(rows("redis", lambda t: 10 * MIB + 100 * t, lambda t: 17, lambda t: 8))[0],
      "Redis's RSS (its data) is not judged")
check(not verdict(rows("redis", lambda t: 10 * MIB, lambda t: 17 + t // 50, lambda t: 8))[0],
      "Redis's fds are judged")
check(not verdict(rows("sidecar-x", lambda t: 5 * MIB, lambda t: 40 + t // 50, lambda t: 14))[0],
      "fds that are not connections growing by 10 fail")
check(verdict(rows("sidecar-x", lambda t: 5 * MIB, lambda t: 40 + t // 50, lambda t: 14 + t // 50))[0],
      "fds growing with established connections (the pools following the load) pass")
check(verdict(rows("sidecar-x", lambda t: 5 * MIB + (30 * MIB if t <= 60 else 0),
                   lambda t: 40 if t > 60 else 90, lambda t: 14))[0],
      "what happens during the 60 s warm-up is not judged")
check(not verdict(rows("sidecar-x", lambda t: 5 * MIB + (5 * MIB if t > 500 else 0), lambda t: 40,
                       lambda t: 14))[0], "a step up in the last samples fails")
check(verdict(rows("sidecar-x", lambda t: 5 * MIB + (5 * MIB if t == 590 else 0), lambda t: 40,
                   lambda t: 14))[0], "one outlier among the last 3 samples does not (medians)")
check(verdict(rows("postgres", lambda t: 500 * MIB + 900 * t, lambda t: 400 + t // 10, lambda t: 20))[0],
      "PostgreSQL (its shared buffers, its data files) is not judged")
short = soak.judge(rows("gateway", lambda t: MIB, lambda t: 1, lambda t: 0, 60), 60)
check(short[0] and "too short" in short[1][0][2], "a 1-minute soak is too short to judge, and says so")

d = tempfile.mkdtemp()
p = os.path.join(d, "s.csv")
client = [(10, "client", "", "", "", "", 100, 0, "1.00", "2.00", "3.00")]
soak.write_csv(p, client + flat[:3])
back = soak.read_csv(p)
os.unlink(p)
os.rmdir(d)
check(back == client + flat[:3], "the CSV reads back as written")

reqs = [soak.mix_request(k, ["u1", "u2"], "tok", "h") for k in range(1000)]
posts = [r for r in reqs if r.startswith(b"POST /api/v1/orders ")]
gets = [r for r in reqs if r.startswith(b"GET /api/v1/users/u")]
over = [r for r in posts if b'"total_cents":150000' in r]
check((len(gets), len(posts), len(over)) == (800, 200, 10),
      "the mix: 800 GETs, 200 POSTs, 10 orders over the limit (%d, %d, %d)" % (len(gets), len(posts), len(over)))
check(all(b"Authorization: Bearer tok\r\n" in r for r in reqs), "every request carries the JWT")
lua = soak.lua_string('{"a":"1"}\r\n1')
check(lua == '"{\\034a\\034:\\0341\\034}\\013\\0101"', "Lua strings: three-digit escapes (%s)" % lua)


async def failures():
    """Load.error counts a failure and keeps the first 5 as examples."""
    load = soak.Load(100, 10, ["u1"], "tok", "h")
    load.t0 = asyncio.get_running_loop().time()
    for k in range(7):
        load.error("HTTP 502", k, "bad gateway")
    return load


load = asyncio.run(failures())
check(load.errors == {"HTTP 502": 7} and load.window_errors == 7 and len(load.examples) == 5
      and "GET /api/v1/users/u1 -> HTTP 502 bad gateway" in load.examples[0],
      "failures are counted and the first 5 shown (%s)" % (load.examples[:1],))
print("1..%d" % n)
sys.exit(1 if failed else 0)
