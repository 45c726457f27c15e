#!/usr/bin/env python3
"""Pre-signs private_key_jwt client assertions for benches/service.sh: each request of a
wrk run needs an assertion never used before (the service refuses a replayed jti), and
wrk's Lua cannot sign. EdDSA (Ed25519), the service's own default, signed with the
`cryptography` package; `aud` is the issuer, which every endpoint accepts.

Usage: assertions.py KEY.pem CLIENT_ID ISSUER COUNT OUT
Writes COUNT lines to OUT, each `client_assertion` form-encoded (base64url needs none)."""
import base64
import json
import sys
import time
import uuid

from cryptography.hazmat.primitives.serialization import load_pem_private_key


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    key_path, client_id, issuer, count, out = sys.argv[1:6]
    with open(key_path, "rb") as f:
        key = load_pem_private_key(f.read(), password=None)
    header = b64(json.dumps({"alg": "EdDSA", "typ": "JWT"}, separators=(",", ":")).encode())
    now = int(time.time())
    with open(out, "w") as f:
        for _ in range(int(count)):
            claims = {"iss": client_id, "sub": client_id, "aud": issuer, "iat": now,
                      "exp": now + 3600, "jti": str(uuid.uuid4())}
            payload = b64(json.dumps(claims, separators=(",", ":")).encode())
            signing_input = f"{header}.{payload}"
            f.write(f"{signing_input}.{b64(key.sign(signing_input.encode()))}\n")


if __name__ == "__main__":
    main()
