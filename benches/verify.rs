//! What one `private_key_jwt` assertion costs the service before anything else: the
//! checks of `auth::assertion::verify` (taking the JWS apart, the signature with the
//! client's key, the claims), per key algorithm, on one core. `benches/service.sh` runs it
//! first, then beside its HTTP scenarios prints the lowest ratio the secret path could
//! have over `private_key_jwt` on the same machine (README "Performance").
//!
//! Usage: `cargo bench --bench verify` (prints `ALG microseconds` lines, best of 5 rounds).

use std::time::Instant;

use jsonwebtoken::Header;
use serde_json::json;
use simple_api::auth::assertion;
use simple_api::auth::keys::{self, Key, KeyAlgorithm};
use simple_api::domain::ClientKeys;

const ASSERTIONS: usize = 2_000;
const ROUNDS: usize = 5;

fn main() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let client = uuid::Uuid::new_v4();
    let audience = "simple-api";
    for (name, alg) in [
        ("EdDSA", KeyAlgorithm::EdDsa),
        ("ES256", KeyAlgorithm::Es256),
        ("RS256", KeyAlgorithm::Rs256),
    ] {
        let path = keys::generate(dir.path(), alg).expect("a key");
        let key = Key::from_pem(
            &std::fs::read(&path).expect("the key file"),
            &path,
            std::time::SystemTime::now(),
        )
        .expect("a key pair");
        // Registered as `clients create --public-key` registers it (its kid: the thumbprint).
        let public =
            assertion::public_key_from_pem(key.public_pem().as_bytes()).expect("a public key");
        let kid = public.kid.clone();
        let registered = ClientKeys::new(vec![public]).expect("a key set");
        let now = chrono::Utc::now();
        // Each assertion as a client library signs it: fresh jti, an hour ahead.
        let assertions: Vec<String> = (0..ASSERTIONS)
            .map(|_| {
                let claims = json!({
                    "iss": client.to_string(), "sub": client.to_string(), "aud": audience,
                    "iat": now.timestamp(), "exp": now.timestamp() + 3600,
                    "jti": uuid::Uuid::new_v4().to_string(),
                });
                let mut header = Header::new(key.algorithm);
                header.kid = Some(kid.clone());
                jsonwebtoken::encode(&header, &claims, &key.encoding).expect("a signed assertion")
            })
            .collect();
        let best = (0..ROUNDS)
            .map(|_| {
                let started = Instant::now();
                for one in &assertions {
                    assertion::verify(one, client, &registered, &[audience], now)
                        .expect("a valid assertion");
                }
                started.elapsed().as_secs_f64() * 1e6 / ASSERTIONS as f64
            })
            .fold(f64::INFINITY, f64::min);
        println!("{name} {best:.1}");
    }
}
