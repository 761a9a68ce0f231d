//! The HTTP contract: each service's `/openapi.json` is a valid OpenAPI 3.1 document (checked by
//! a real validator, `openapi-spec-validator` from PyPI, which `cargo xtask test` installs), and
//! every route a service's router serves is in it.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// Each service's crate folder and its whole document, as `/openapi.json` serves it.
fn documents() -> Vec<(&'static str, Value)> {
    let doc = |d: utoipa::openapi::OpenApi| {
        serde_json::to_value(saga_shared::service::document(d)).unwrap()
    };
    vec![
        ("order-service", doc(order_service::api::openapi())),
        ("payment-service", doc(payment_service::api::openapi())),
        ("inventory-service", doc(inventory_service::api::openapi())),
        (
            "notification-service",
            doc(notification_service::api::openapi()),
        ),
    ]
}

#[test]
fn every_document_is_valid_openapi_3_1() {
    let dir = tempfile::tempdir().unwrap();
    for (service, doc) in documents() {
        assert_eq!(doc["openapi"], "3.1.0", "{service}");
        let file = dir.path().join(format!("{service}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        let out = std::process::Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(&file)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{service}'s OpenAPI document is invalid (is openapi-spec-validator installed? \
             `cargo xtask setup`):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn problems_are_declared_as_problem_json() {
    for (service, doc) in documents() {
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    if status.starts_with('4') {
                        let types: Vec<&String> =
                            response["content"].as_object().unwrap().keys().collect();
                        assert_eq!(
                            types,
                            ["application/problem+json"],
                            "{service} {method} {path} {status}"
                        );
                    }
                }
            }
        }
    }
}

/// `(METHOD, path)` of every `.route("path", get(..).post(..))` call in `source`.
fn routes_in(source: &str) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let Some(open) = rest.find('"') else { break };
        let after = &rest[open + 1..];
        let close = after.find('"').unwrap();
        let path = after[..close].to_owned();
        // The method routers: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let mut end = 0;
        for (i, ch) in rest.char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = i;
                break;
            }
        }
        let args = &rest[..end];
        for method in ["get", "post", "put", "patch", "delete"] {
            let call = format!("{method}(");
            let mut from = 0;
            while let Some(i) = args[from..].find(&call) {
                let start = from + i;
                let before = args[..start].chars().last();
                if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
                    routes.insert((method.to_uppercase(), path.clone()));
                }
                from = start + call.len();
            }
        }
        rest = &rest[end..];
    }
    routes
}

#[test]
fn every_route_the_routers_serve_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let common = routes_in(&std::fs::read_to_string(root.join("shared/src/service.rs")).unwrap());
    assert_eq!(common.len(), 4, "{common:?}");
    for (service, doc) in documents() {
        let api = std::fs::read_to_string(root.join(service).join("src/api.rs")).unwrap();
        let served: BTreeSet<_> = routes_in(&api).union(&common).cloned().collect();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(|m| (m.to_uppercase(), path.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(served, documented, "{service}: served vs documented");
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let described = response["description"].as_str().unwrap_or_default();
                    assert!(
                        !described.is_empty(),
                        "{service} {method} {path} {status} has a description"
                    );
                }
            }
        }
    }
}

#[test]
fn routes_are_read_from_source() {
    let source = r#"Router::new()
        .route("/orders", get(list).post(create))
        .route(
            "/metrics",
            get(move || async move { metrics.render() }),
        )"#;
    let found: Vec<_> = routes_in(source).into_iter().collect();
    assert_eq!(
        found,
        [
            ("GET".to_owned(), "/metrics".to_owned()),
            ("GET".to_owned(), "/orders".to_owned()),
            ("POST".to_owned(), "/orders".to_owned()),
        ]
    );
}

#[test]
fn filters_are_optional_query_parameters() {
    let (_, orders) = &documents()[0];
    let params = orders["paths"]["/orders"]["get"]["parameters"]
        .as_array()
        .unwrap();
    assert!(!params.is_empty());
    for p in params {
        assert_eq!(p["in"], "query", "{p}");
        assert_eq!(p["required"], false, "{p}");
    }
}
