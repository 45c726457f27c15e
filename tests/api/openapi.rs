//! The OpenAPI spec and the docs page, as the code generates them: no app is started, so
//! these run once, not once per store (the served spec and docs: `docs.rs`, in the suite).

use std::collections::HashSet;

use serde_json::Value;

use super::helpers::process::command;

/// The spec as committed (openapi/openapi.json).
pub const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");

#[test]
fn the_committed_spec_is_the_generated_one() {
    let generated = simple_api::api::spec_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date with the code.\n\
         Regenerate it with:  UPDATE_OPENAPI=1 cargo test --test api the_committed_spec\n\
         (or: cargo run -- openapi > openapi/openapi.json) and commit the diff."
    );
}

#[test]
fn every_operation_has_a_unique_operation_id_a_summary_and_documented_errors() {
    let spec: Value = serde_json::from_str(&simple_api::api::spec_json()).unwrap();
    let mut ids = HashSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            let protected = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().all(|r| !r.as_object().unwrap().is_empty()));
            if protected {
                for status in ["401", "403"] {
                    assert!(
                        op["responses"][status].is_object(),
                        "{method} {path} does not document {status}"
                    );
                }
            }
        }
    }
    assert!(ids.len() >= 9, "{ids:?}");
}

#[test]
fn the_oauth2_password_flow_points_at_the_token_endpoint_and_declares_scopes() {
    let spec: Value = serde_json::from_str(&simple_api::api::spec_json()).unwrap();
    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    let password = &schemes["oauth2"]["flows"]["password"];
    assert_eq!(password["tokenUrl"], "/api/v1/auth/token");
    assert!(
        !password["scopes"].as_object().unwrap().is_empty(),
        "generators need scopes"
    );
    let token_op = &spec["paths"]["/api/v1/auth/token"]["post"];
    assert!(token_op["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
    let me = &spec["paths"]["/api/v1/users/{id}"]["get"]["security"];
    assert_eq!(
        me,
        &serde_json::json!([
            {"bearerAuth": []}, {"oauth2": ["profile"]}, {"oauth2": ["users:read"]}, {"sessionCookie": []}
        ]),
        "yourself with profile, or users:read; never anonymous"
    );
    let clients = &schemes["oauth2"]["flows"]["clientCredentials"];
    assert_eq!(clients["tokenUrl"], "/api/v1/auth/token");
    assert_eq!(password["refreshUrl"], "/api/v1/auth/token");
    let cookie = &schemes["sessionCookie"];
    assert_eq!(
        (cookie["type"].as_str(), cookie["in"].as_str()),
        (Some("apiKey"), Some("cookie"))
    );
}

#[test]
fn every_protected_operation_declares_its_access_once() {
    use simple_api::api::ACCESS;
    let spec: Value = serde_json::from_str(&simple_api::api::spec_json()).unwrap();
    let mut protected = HashSet::new();
    for item in spec["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            if op["security"].is_array() {
                protected.insert(op["operationId"].as_str().unwrap().to_owned());
            }
        }
    }
    let declared: HashSet<String> = ACCESS.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(
        protected, declared,
        "operations with a token and ACCESS entries differ"
    );
}

#[test]
fn swagger_ui_shows_the_served_spec_and_keeps_the_login() {
    let html = simple_api::api::docs_html(
        &simple_api::api::openapi_service(),
        &simple_api::api::spec_json(),
    );
    assert!(
        html.contains(simple_api::api::spec_json().trim_end()),
        "the page embeds the served spec"
    );
    assert!(html.contains("persistAuthorization: true"));
}

#[test]
fn the_spec_has_no_all_of_wrappers_that_break_generators() {
    // poem-openapi wraps a documented field of a named type in `allOf`, which
    // openapi-python-client cannot handle (it silently drops the operation).
    assert!(!simple_api::api::spec_json().contains("allOf"));
}

#[test]
fn the_openapi_command_prints_the_committed_spec() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).arg("openapi").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        simple_api::api::spec_json()
    );
    assert!(
        !dir.path().join("data").exists(),
        "printing the spec touches no state"
    );
}
