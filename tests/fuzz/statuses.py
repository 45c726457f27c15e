"""Count schemathesis' answers per operation, generation mode and status.

As schemathesis hooks (SCHEMATHESIS_HOOKS=statuses.py, or imported by hooks.py) with
ST_STATUSES=path.json: every response schemathesis receives (replays after a re-login too,
requests the hooks make themselves never) is counted, and the counts are written to that file
when schemathesis exits. As a script, `python3 statuses.py a.json [b.json...]` prints them as
a table: one row per operation, `positive` and `negative` answers by status (the file also
keeps them per phase); `python3 statuses.py --every-operation-served openapi.json a.json...`
fails naming each operation of the spec that never answered 2xx to positive (valid) data.
"""

import atexit
import collections
import json
import os
import sys
import threading

_counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
_lock = threading.Lock()


def operation_id(case) -> str:
    return case.operation.definition.raw.get("operationId") or case.operation.label


def record(case, response) -> None:
    meta = case.meta
    phase, mode = (meta.phase.name.value, meta.generation.mode.value) if meta is not None else ("explicit", "explicit")
    with _lock:
        _counts[operation_id(case)][f"{phase} {mode} {response.status_code}"] += 1


def _write() -> None:
    path = os.environ.get("ST_STATUSES")
    if path:
        with _lock, open(path, "w") as f:
            json.dump({op: dict(c) for op, c in sorted(_counts.items())}, f, indent=1, sort_keys=True)


def install() -> None:
    """Register the counting hook (once per process)."""
    import schemathesis

    if getattr(install, "done", False):
        return
    install.done = True

    @schemathesis.hook("after_call")
    def count_status(context, case, response):
        record(case, response)

    atexit.register(_write)


def table(paths: list[str]) -> str:
    merged: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for path in paths:
        with open(path) as f:
            for op, counts in json.load(f).items():
                merged[op].update(counts)
    lines = []
    width = max((len(op) for op in merged), default=9)
    for op in sorted(merged):
        per_mode: collections.Counter = collections.Counter()
        for key, count in merged[op].items():
            _phase, mode, status = key.split()
            per_mode[(mode, int(status))] += count
        by_mode: dict[str, list[str]] = collections.defaultdict(list)
        for (mode, status), count in sorted(per_mode.items()):
            by_mode[mode].append(f"{status}x{count}")
        cells = "  ".join(f"{mode}: {' '.join(by_mode[mode])}" for mode in sorted(by_mode))
        lines.append(f"{op:<{width}}  {cells}")
    return "\n".join(lines)


def unserved(spec_path: str, paths: list[str]) -> list[str]:
    """The spec's operations that never answered a 2xx to positive data."""
    with open(spec_path) as f:
        spec = json.load(f)
    served = set()
    for path in paths:
        with open(path) as f:
            for op, counts in json.load(f).items():
                if any(key.split()[1] == "positive" and key.split()[2].startswith("2") for key in counts):
                    served.add(op)
    ops = [
        o.get("operationId") or f"{method.upper()} {route}"
        for route, item in spec["paths"].items()
        for method, o in item.items()
        if method in ("get", "put", "post", "delete", "patch", "head", "options")
    ]
    return [op for op in ops if op not in served]


if __name__ == "__main__":
    if sys.argv[1] == "--every-operation-served":
        missing = unserved(sys.argv[2], sys.argv[3:])
        for op in missing:
            print(f"{op}: never answered 2xx to valid data", file=sys.stderr)
        sys.exit(1 if missing else 0)
    print(table(sys.argv[1:]))
elif "schemathesis" in sys.modules:
    install()
