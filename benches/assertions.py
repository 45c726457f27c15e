#!/usr/bin/env python3
"""Pre-signs private_key_jwt client assertions for benches/service.sh: each request of a
wrk run needs an assertion never used before (the service refuses a replayed jti), and
wrk's Lua cannot sign. Signed with the `cryptography` package, on every core; `aud` is the
issuer, which every endpoint accepts.

Usage: assertions.py KEY.pem ALG CLIENT_ID ISSUER COUNT OUT   (ALG: EdDSA, ES256, RS256)
Writes COUNT lines to OUT, each a `client_assertion` (base64url needs no form-encoding)."""
import base64
import json
import multiprocessing
import sys
import time
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_private_key


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(key, alg: str, message: bytes) -> bytes:
    if alg == "EdDSA":
        return key.sign(message)
    if alg == "ES256":
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def batch(args) -> list:
    key_path, alg, client_id, issuer, count = args
    with open(key_path, "rb") as f:
        key = load_pem_private_key(f.read(), password=None)
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    now = int(time.time())
    lines = []
    for _ in range(count):
        claims = {"iss": client_id, "sub": client_id, "aud": issuer, "iat": now,
                  "exp": now + 3600, "jti": str(uuid.uuid4())}
        payload = b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}"
        lines.append(f"{signing_input}.{b64(sign(key, alg, signing_input.encode()))}\n")
    return lines


def main() -> None:
    key_path, alg, client_id, issuer, count, out = sys.argv[1:7]
    workers = multiprocessing.cpu_count()
    share = -(-int(count) // workers)
    with multiprocessing.Pool(workers) as pool:
        parts = pool.map(batch, [(key_path, alg, client_id, issuer, share)] * workers)
    with open(out, "w") as f:
        for part in parts:
            f.writelines(part)


if __name__ == "__main__":
    main()
