#!/usr/bin/env python3
"""Writes a DATA_DIR/store.log with N users, quickly, for the growth benchmarks.

Every user gets the same password hash (taken from a template user in an existing store), so
logins work with one known password; ids are UUIDv7-shaped and increasing, like the service's.
With EXTRA, the log also holds EXTRA later versions of existing users (a log that has
outgrown its live records, for the compaction benchmark).
Usage: benches/gen_users.py N TEMPLATE_DATA_DIR OUT_DATA_DIR [EXTRA]
"""
import json
import os
import sys
import uuid
import zlib
from datetime import datetime, timedelta, timezone


def line(entry: dict) -> bytes:
    body = json.dumps(entry, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def main() -> None:
    n, template_dir, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    extra = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    template = None
    for raw in open(os.path.join(template_dir, "store.log"), "rb"):
        entry = json.loads(raw.split(b" ", 1)[1])
        if entry.get("op") == "user_put":
            template = entry["user"]
    assert template, "the template store has no user"
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    path = os.path.join(out_dir, "store.log")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb", buffering=1 << 20) as f:
        f.write(line({"op": "format", "version": 1}))
        for k in range(n + extra):
            i = k % n
            at = (start + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z")
            changed = (start + timedelta(milliseconds=n + k)).isoformat().replace("+00:00", "Z")
            user = dict(template)
            user.update(id=str(uuid.UUID(int=(0x0190_0000_0000_7000_8000_0000_0000_0000 | i))),
                        email=f"user{i}@example.com", created_at=at,
                        updated_at=at if k < n else changed)
            f.write(line({"op": "user_put", "user": user}))
    print(f"{n} users ({n + extra} user records) in {path}")


if __name__ == "__main__":
    main()
