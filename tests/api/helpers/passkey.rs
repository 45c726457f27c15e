//! A software authenticator, as a browser with a platform passkey would answer WebAuthn
//! ceremonies: P-256 keys (ES256), attestation "none", user presence and verification
//! flags set, a signature counter. Written from the WebAuthn Level 2 data formats (§6.1
//! authenticator data, §6.5.4 attestation object, §5.8.1 client data) so the service is
//! checked against the format itself, not against its own library; the real browser test
//! (`tests/browser/pages.mjs`) uses Chromium's virtual authenticator.

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

/// One credential held by the authenticator.
pub struct SoftPasskey {
    pub origin: String,
    pub rp_id: String,
    pub credential_id: Vec<u8>,
    pub user_handle: Vec<u8>,
    key: EcdsaKeyPair,
    pub counter: u32,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

/// CBOR (RFC 8949) head: major type and length.
fn head(major: u8, len: usize, out: &mut Vec<u8>) {
    let major = major << 5;
    match len {
        0..=23 => out.push(major | len as u8),
        24..=0xff => out.extend([major | 24, len as u8]),
        _ => {
            out.push(major | 25);
            out.extend((len as u16).to_be_bytes());
        }
    }
}

fn cbor_text(text: &str, out: &mut Vec<u8>) {
    head(3, text.len(), out);
    out.extend(text.as_bytes());
}

fn cbor_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    head(2, bytes.len(), out);
    out.extend(bytes);
}

/// A small negative integer (-1 - n), for COSE labels.
fn cbor_negative(value: i8) -> u8 {
    0x20 | (-1 - value) as u8
}

const UP: u8 = 0x01;
const UV: u8 = 0x04;
const AT: u8 = 0x40;

impl SoftPasskey {
    /// Answers a registration's options (`{"publicKey": …}` as the service sends them),
    /// from `origin`: the credential JSON and the new passkey.
    pub fn register(options: &Value, origin: &str) -> (Value, SoftPasskey) {
        let pk = &options["publicKey"];
        let rp_id = pk["rp"]["id"].as_str().unwrap().to_owned();
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let credential_id: Vec<u8> = uuid::Uuid::new_v4().as_bytes().repeat(2);
        let passkey = SoftPasskey {
            origin: origin.to_owned(),
            rp_id,
            credential_id,
            user_handle: unb64(pk["user"]["id"].as_str().unwrap()),
            key,
            counter: 0,
        };
        let client_data = passkey.client_data("webauthn.create", pk["challenge"].as_str().unwrap());
        let point = passkey.key.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        // COSE_Key (RFC 9052): {1: 2 (EC2), 3: -7 (ES256), -1: 1 (P-256), -2: x, -3: y}.
        let mut cose = vec![0xa5, 0x01, 0x02, 0x03, cbor_negative(-7)];
        cose.extend([cbor_negative(-1), 0x01, cbor_negative(-2)]);
        cbor_bytes(&point[1..33], &mut cose);
        cose.push(cbor_negative(-3));
        cbor_bytes(&point[33..], &mut cose);
        let mut auth_data = passkey.auth_data(UP | UV | AT);
        auth_data.extend([0u8; 16]); // AAGUID: none
        auth_data.extend((passkey.credential_id.len() as u16).to_be_bytes());
        auth_data.extend(&passkey.credential_id);
        auth_data.extend(cose);
        let mut attestation = vec![0xa3];
        cbor_text("fmt", &mut attestation);
        cbor_text("none", &mut attestation);
        cbor_text("attStmt", &mut attestation);
        attestation.push(0xa0);
        cbor_text("authData", &mut attestation);
        cbor_bytes(&auth_data, &mut attestation);
        let id = b64(&passkey.credential_id);
        let credential = json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "response": {
                "attestationObject": b64(&attestation),
                "clientDataJSON": b64(&client_data),
                "transports": ["internal"],
            },
            "extensions": {},
        });
        (credential, passkey)
    }

    /// Answers an authentication's options with this passkey (a new counter value each
    /// time, as a hardware key keeps).
    pub fn answer(&mut self, options: &Value) -> Value {
        let challenge = options["publicKey"]["challenge"].as_str().unwrap();
        self.counter += 1;
        self.assert_with(challenge, &self.origin.clone(), self.counter)
    }

    /// An assertion for `challenge` from `origin`, with `counter`: for answers that
    /// must be refused (another origin, a counter gone back).
    pub fn assert_with(&self, challenge: &str, origin: &str, counter: u32) -> Value {
        let client_data = json!({
            "type": "webauthn.get",
            "challenge": challenge,
            "origin": origin,
            "crossOrigin": false,
        })
        .to_string()
        .into_bytes();
        let mut auth_data = digest(&SHA256, self.rp_id.as_bytes()).as_ref().to_vec();
        auth_data.push(UP | UV);
        auth_data.extend(counter.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend(digest(&SHA256, &client_data).as_ref());
        let signature = self
            .key
            .sign(&SystemRandom::new(), &signed)
            .unwrap()
            .as_ref()
            .to_vec();
        let id = b64(&self.credential_id);
        json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(&signature),
                "userHandle": b64(&self.user_handle),
            },
            "extensions": {},
        })
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        json!({ "type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false })
            .to_string()
            .into_bytes()
    }

    fn auth_data(&self, flags: u8) -> Vec<u8> {
        let mut data = digest(&SHA256, self.rp_id.as_bytes()).as_ref().to_vec();
        data.push(flags);
        data.extend(self.counter.to_be_bytes());
        data
    }
}
