#!/usr/bin/env python3
"""Writes a dnsperf query file that mixes the shared query files, round after round:
BLOCKED names from blocked.txt, CACHED names from cached.txt, MISS names never asked
before (unique, under the NSD upstream's wildcard *.w.bench.example) and TUNNEL
tunnel-like TXT names (a random base32 label under one of 97 domains).

  mix.py QUERIES_DIR OUT --blocked 4 --cached 13 --miss 3 --prefix r   # realistic mix
  mix.py QUERIES_DIR OUT --blocked 8 --cached 8 --miss 3 --tunnel 1 --prefix s   # soak

The same arguments always give the same file.
"""
import argparse
import base64
import random

p = argparse.ArgumentParser()
p.add_argument("queries")
p.add_argument("out")
p.add_argument("--rounds", type=int, default=100_000)
p.add_argument("--blocked", type=int, default=0)
p.add_argument("--cached", type=int, default=0)
p.add_argument("--miss", type=int, default=0)
p.add_argument("--tunnel", type=int, default=0)
p.add_argument("--prefix", default="m", help="first letters of the miss names")
a = p.parse_args()

rnd = random.Random(7)
blocked = open(f"{a.queries}/blocked.txt").read().split("\n")[:-1]
cached = open(f"{a.queries}/cached.txt").read().split("\n")[:-1]
with open(a.out, "w") as f:
    for i in range(a.rounds):
        for j in range(a.blocked):
            f.write(blocked[(i * a.blocked + j) % len(blocked)] + "\n")
        for j in range(a.cached):
            f.write(cached[(i * a.cached + j) % len(cached)] + "\n")
        for j in range(a.miss):
            f.write(f"{a.prefix}{i}x{j}.w.bench.example A\n")
        for _ in range(a.tunnel):
            label = base64.b32encode(rnd.randbytes(25)).decode().rstrip("=").lower()
            f.write(f"{label}.t{i % 97}.w.bench.example TXT\n")
