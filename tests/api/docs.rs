//! The spec and Swagger UI as the running app serves them.

use serde_json::Value;

use super::helpers::spawn_app;
use crate::openapi::COMMITTED;

#[test]
fn the_served_spec_is_the_committed_file() {
    let app = spawn_app();
    let resp = app.get("/openapi.json", None);
    assert_eq!(resp.status, 200);
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(COMMITTED).unwrap()).unwrap();
    assert_eq!(resp.json(), committed);
}

#[test]
fn swagger_ui_is_served_without_any_outside_asset() {
    let app = spawn_app();
    for path in ["/docs", "/docs/"] {
        let resp = app.get(path, None);
        assert_eq!(resp.status, 200, "{path}");
        assert!(resp
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        assert!(resp.body.contains("swagger"), "{path} is not Swagger UI");
        for tag in [
            "<script src=\"http",
            "<link href=\"http",
            "src=\"//",
            "href=\"//",
        ] {
            assert!(
                !resp.body.contains(tag),
                "{path} loads an outside asset ({tag})"
            );
        }
    }
}
