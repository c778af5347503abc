#!/usr/bin/env python3
"""Writes a Hyper-V inventory in the shape `macpool hyperv export-script --cluster` produces (a
JSON array of host documents, compressed like `ConvertTo-Json -Compress`), with ADAPTERS
adapters in all, live and checkpoint, deterministic for a seed.

    scripts/gen-hyperv-export.py --adapters 1000000 --hosts 16 --seed 7 OUT

Each VM has one live adapter and CHECKPOINTS checkpoint adapters that hold its own MAC (not a
conflict). Planted: --latent checkpoints holding another VM's live MAC (the seed's time bomb),
--dups live MACs given to a second VM, and --migrating VMs listed on two hosts (not a conflict).
The expected counts are printed to stderr.
"""
import argparse
import json
import random
import sys

NIL = "00000000-0000-0000-0000-000000000000"


def guid(rng):
    return "%08x-%04x-4%03x-%04x-%012x" % (rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12),
                                          0x8000 | rng.getrandbits(14), rng.getrandbits(48))


def adapter(host, vm_id, vm_name, mac, snap_id=NIL, snap_name=""):
    return {"Name": "Network Adapter", "Id": "Microsoft:%s\\8A1B-0001" % vm_id.upper(), "VMId": vm_id,
            "VMName": vm_name, "VMSnapshotId": snap_id, "VMSnapshotName": snap_name, "MacAddress": mac,
            "DynamicMacAddressEnabled": True, "SwitchName": "vSwitch-LAN", "IsManagementOs": False,
            "ComputerName": host, "IsDeleted": False}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--adapters", type=int, default=1_000_000)
    ap.add_argument("--hosts", type=int, default=16)
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--latent", type=int, default=500)
    ap.add_argument("--dups", type=int, default=100)
    ap.add_argument("--migrating", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    per_vm = 1 + a.checkpoints
    n_vms = a.adapters // per_vm
    vms = []  # (host, id, name, mac)
    for i in range(n_vms):
        host = "HV%02d" % (i % a.hosts + 1)
        vms.append([host, guid(rng), "desk-%07d" % i, "00155D%06X" % (0x100000 + i)])
    # planted conflicts: each uses a distinct victim MAC
    victims = rng.sample(range(n_vms), a.latent + 2 * a.dups)
    latent_pairs = list(zip(victims[:a.latent], victims[:a.latent][1:] + victims[:1]))[: a.latent]
    dup_pairs = list(zip(victims[a.latent::2], victims[a.latent + 1::2]))
    cp_mac = {}
    for owner, other in latent_pairs:
        cp_mac[owner] = vms[other][3]  # owner's first checkpoint holds other's live MAC
    for first, second in dup_pairs:
        vms[second][3] = vms[first][3]
    migrating = set(rng.sample([i for i in range(n_vms) if i not in set(victims)], a.migrating))

    docs = {}
    for h in range(a.hosts):
        name = "HV%02d" % (h + 1)
        docs[name] = {"Format": "macpool-hyperv-inventory", "Version": 1, "HostName": name, "Cluster": "CL1",
                      "IPAddresses": ["10.0.%d.%d" % (h // 200, h % 200 + 10)], "MacAddressMinimum": "",
                      "MacAddressMaximum": "", "CurrentMacAddress": None, "VMs": [], "Checkpoints": [], "Adapters": []}
    written = 0
    for i, (host, vm_id, name, mac) in enumerate(vms):
        d = docs[host]
        d["VMs"].append({"Id": vm_id, "Name": name, "State": "Running"})
        d["Adapters"].append(adapter(host, vm_id, name, mac))
        written += 1
        if i in migrating:  # the same VM also reported by the next host: a live migration in flight
            other = "HV%02d" % ((int(host[2:]) % a.hosts) + 1)
            docs[other]["Adapters"].append(adapter(other, vm_id, name, mac))
        for c in range(a.checkpoints):
            snap = guid(rng)
            snap_name = "RDV_ROLLBACK - %d" % c
            d["Checkpoints"].append({"Id": snap, "Name": snap_name, "VMId": vm_id, "VMName": name,
                                     "SnapshotType": "Standard", "CreationTime": "2015-10-14T12:00:00.0000000Z"})
            held = cp_mac.get(i, mac) if c == 0 else mac
            d["Adapters"].append(adapter(host, vm_id, name, held, snap, snap_name))
            written += 1
    with open(a.out, "w") as f:
        json.dump(list(docs.values()), f, separators=(",", ":"))
    print("adapters=%d vms=%d expected: latent=%d live-duplicate=%d (migrating, not conflicts: %d)"
          % (written + len(migrating), n_vms, a.latent, a.dups, len(migrating)), file=sys.stderr)


if __name__ == "__main__":
    main()
