#!/usr/bin/env python3
"""Writes a plain MAC list for the `macpool audit` benchmark: N lines, every MAC unique except
DUPS planted duplicates (each a copy of a different earlier line), deterministic for a seed.

    scripts/gen-maclist.py --lines 10000000 --dups 1000 --seed 42 OUT
    scripts/gen-maclist.py --lines 10000000 --space-bits 32 --seed 42 OUT

MACs are locally administered (02:..) and made unique by an odd multiplier modulo 2^40 (a
bijection), so `uniq -d` and the audit must both report exactly DUPS duplicated MACs.

With --space-bits B, every MAC is drawn at random from a space of 2^B addresses instead (02:00:…
for B = 32), so duplicates come by chance, as in a real estate that shares one small range: 10
million draws from 32 bits repeat about 11,600 MACs (n^2 / 2^(B+1)). --dups is then ignored.
"""
import argparse
import random


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--dups", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--space-bits", type=int, default=0)
    a = ap.parse_args()
    if a.space_bits:
        return random_space(a)
    if a.dups * 2 > a.lines:
        ap.error("--dups must be at most half of --lines")
    rng = random.Random(a.seed)
    # line -> index of the earlier line it copies; sources and copies all distinct
    picks = rng.sample(range(a.lines), 2 * a.dups)
    copy_of = {}
    for src, dst in zip(picks[::2], picks[1::2]):
        src, dst = min(src, dst), max(src, dst)
        copy_of[dst] = src
    mult = 0x9E3779B97F & ((1 << 40) - 1) | 1
    offset = rng.getrandbits(40)
    mask = (1 << 40) - 1
    with open(a.out, "w", buffering=1 << 20) as f:
        chunk = []
        for i in range(a.lines):
            k = copy_of.get(i, i)
            v = (0x02 << 40) | (((k * mult) + offset) & mask)
            chunk.append(v.to_bytes(6, "big").hex(":"))
            if len(chunk) == 100_000:
                f.write("\n".join(chunk) + "\n")
                chunk.clear()
        if chunk:
            f.write("\n".join(chunk) + "\n")


def random_space(a):
    if not 16 <= a.space_bits <= 40:
        raise SystemExit("--space-bits must be between 16 and 40")
    rng = random.Random(a.seed)
    bits = a.space_bits
    with open(a.out, "w", buffering=1 << 20) as f:
        done = 0
        while done < a.lines:
            n = min(100_000, a.lines - done)
            f.write("".join(((0x02 << 40) | rng.getrandbits(bits)).to_bytes(6, "big").hex(":") + "\n" for _ in range(n)))
            done += n


if __name__ == "__main__":
    main()
