//! The registry over real HTTP, kept in a real broker's compacted `_schemas` topic: Confluent's
//! routes, bodies and error codes, compatibility at the subject's level, and everything
//! replayed by a registry started again on the same topic.

use std::time::Duration;

use reqwest::StatusCode;
use schema_registry::Registry;
use schema_registry::client::{ClientError, RegistryClient};
use serde_json::{Value, json};

/// A broker embedded on a free port, with its data directory.
struct Broker {
    _handle: broker::BrokerHandle,
    _dir: tempfile::TempDir,
    bootstrap: String,
}

async fn broker() -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let config = broker::BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = broker::spawn(listener, config).await.unwrap();
    Broker {
        bootstrap: handle.bootstrap(),
        _handle: handle,
        _dir: dir,
    }
}

/// The registry on `bootstrap`, served on a free port; its base URL.
async fn serve(bootstrap: &str) -> String {
    let registry = tokio::time::timeout(Duration::from_secs(60), Registry::open(bootstrap))
        .await
        .expect("the registry opens within a minute")
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    schema_registry::api::spawn(listener, registry);
    base
}

/// The event schema of the tests' subject: closed, two required fields.
fn v1() -> Value {
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "OrderCreated",
        "type": "object",
        "additionalProperties": false,
        "required": ["order_id", "total"],
        "properties": {
            "order_id": {"type": "string", "format": "uuid"},
            "total": {"type": "integer"}
        }
    })
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .header("content-type", "application/vnd.schemaregistry.v1+json");
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(url: String) -> (StatusCode, Value) {
    call(reqwest::Method::GET, url, None).await
}

async fn post(url: String, body: Value) -> (StatusCode, Value) {
    call(reqwest::Method::POST, url, Some(body)).await
}

fn schema_body(schema: &Value) -> Value {
    json!({"schemaType": "JSON", "schema": schema.to_string()})
}

const SUBJECT: &str = "order.created-value";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_versions_ids_and_compatibility_as_confluents_registry_answers_them() {
    let b = broker().await;
    let base = serve(&b.bootstrap).await;
    let versions = format!("{base}/subjects/{SUBJECT}/versions");

    // Registered: id 1; the same schema again (other key order) is the same id, no new version.
    assert_eq!(
        post(versions.clone(), schema_body(&v1())).await,
        (StatusCode::OK, json!({"id": 1}))
    );
    let reordered: Value = serde_json::from_str(&v1().to_string()).unwrap();
    assert_eq!(
        post(versions.clone(), schema_body(&reordered)).await.1,
        json!({"id": 1})
    );
    assert_eq!(get(format!("{base}/subjects")).await.1, json!([SUBJECT]));
    assert_eq!(get(versions.clone()).await.1, json!([1]));

    // A new optional field: compatible (BACKWARD, the default), version 2, id 2.
    let mut v2 = v1();
    v2["properties"]["note"] = json!({"type": ["string", "null"]});
    let (status, answer) = post(
        format!("{base}/compatibility/subjects/{SUBJECT}/versions/latest?verbose=true"),
        schema_body(&v2),
    )
    .await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::OK,
            json!({"is_compatible": true, "messages": []})
        )
    );
    assert_eq!(
        post(versions.clone(), schema_body(&v2)).await.1,
        json!({"id": 2})
    );
    let (_, latest) = get(format!("{versions}/latest")).await;
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["id"], 2);
    assert_eq!(latest["schemaType"], "JSON");
    assert_eq!(
        serde_json::from_str::<Value>(latest["schema"].as_str().unwrap()).unwrap(),
        v2
    );

    // A field removed and one retyped: refused before anything is kept, and why.
    let mut removed = v2.clone();
    removed["properties"]
        .as_object_mut()
        .unwrap()
        .remove("total");
    removed["required"] = json!(["order_id"]);
    let (status, refused) = post(versions.clone(), schema_body(&removed)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(refused["error_code"], 409);
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("incompatible") && message.contains("#/properties/total: removed"),
        "{message}"
    );
    let mut retyped = v2.clone();
    retyped["properties"]["total"] = json!({"type": "string"});
    let (_, check) = post(
        format!("{base}/compatibility/subjects/{SUBJECT}/versions/2?verbose=true"),
        schema_body(&retyped),
    )
    .await;
    assert_eq!(
        check,
        json!({"is_compatible": false, "messages": ["#/properties/total: the type changed from integer to string"]})
    );
    // A route Confluent's registry does not have: its JSON error, not an empty body.
    assert_eq!(
        get(format!("{base}/no/such/route")).await,
        (
            StatusCode::NOT_FOUND,
            json!({"error_code": 404, "message": "HTTP 404 Not Found"})
        )
    );
    // Flags read as Java reads them (Confluent's Python client sends `verbose=True`).
    for (flag, messages) in [("True", true), ("TRUE", true), ("no", false), ("", false)] {
        let (status, check) = post(
            format!("{base}/compatibility/subjects/{SUBJECT}/versions/2?verbose={flag}"),
            schema_body(&retyped),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "verbose={flag}");
        assert_eq!(check.get("messages").is_some(), messages, "verbose={flag}");
    }
    assert_eq!(
        get(versions.clone()).await.1,
        json!([1, 2]),
        "nothing was kept"
    );

    // Bad input: clear errors with Confluent's codes.
    let (status, avro) = post(versions.clone(), json!({"schema": "{\"type\":\"record\"}"})).await;
    assert_eq!(
        (status, avro["error_code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(42201))
    );
    assert!(
        avro["message"]
            .as_str()
            .unwrap()
            .contains("AVRO schemas are not kept here")
    );
    let (status, bad) = post(
        versions.clone(),
        json!({"schemaType": "JSON", "schema": "{not json"}),
    )
    .await;
    assert_eq!(
        (status, bad["error_code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(42201))
    );
    let (status, garbage) = call(reqwest::Method::POST, versions.clone(), None).await;
    assert_eq!(
        (status, garbage["error_code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(422))
    );
    let (status, missing) = get(format!("{base}/subjects/nope/versions")).await;
    assert_eq!(
        (status, missing["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40401))
    );
    let (status, no_id) = get(format!("{base}/schemas/ids/99")).await;
    assert_eq!(
        (status, no_id["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40403))
    );
    let (status, no_version) = get(format!("{versions}/7")).await;
    assert_eq!(
        (status, no_version["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40402))
    );
    let (status, bad_version) = get(format!("{versions}/zero")).await;
    assert_eq!(
        (status, bad_version["error_code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(42202))
    );

    // Ids: by id, and where each is used; the same schema in another subject keeps its id.
    let (_, by_id) = get(format!("{base}/schemas/ids/1")).await;
    assert_eq!(
        serde_json::from_str::<Value>(by_id["schema"].as_str().unwrap()).unwrap(),
        v1()
    );
    assert_eq!(
        post(
            format!("{base}/subjects/copy-value/versions"),
            schema_body(&v1())
        )
        .await
        .1,
        json!({"id": 1})
    );
    assert_eq!(
        get(format!("{base}/schemas/ids/1/versions")).await.1,
        json!([{"subject": "copy-value", "version": 1}, {"subject": SUBJECT, "version": 1}])
    );
    let (_, found) = post(format!("{base}/subjects/{SUBJECT}"), schema_body(&v2)).await;
    assert_eq!(
        (found["version"].clone(), found["id"].clone()),
        (json!(2), json!(2))
    );

    // Levels: per subject; NONE lets anything through; deleting the subject's goes back.
    assert_eq!(
        get(format!("{base}/config")).await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    let (status, _) = get(format!("{base}/config/{SUBJECT}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, set) = call(
        reqwest::Method::PUT,
        format!("{base}/config/{SUBJECT}"),
        Some(json!({"compatibility": "NONE"})),
    )
    .await;
    assert_eq!(set, json!({"compatibility": "NONE"}));
    assert_eq!(
        post(versions.clone(), schema_body(&removed)).await.1,
        json!({"id": 3})
    );
    let (_, cleared) = call(
        reqwest::Method::DELETE,
        format!("{base}/config/{SUBJECT}"),
        None,
    )
    .await;
    assert_eq!(cleared, json!({"compatibilityLevel": "NONE"}));
    assert_eq!(
        get(format!("{base}/config/{SUBJECT}?defaultToGlobal=true"))
            .await
            .1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    let (status, bad_level) = call(
        reqwest::Method::PUT,
        format!("{base}/config"),
        Some(json!({"compatibility": "SOMETIMES"})),
    )
    .await;
    assert_eq!(
        (status, bad_level["error_code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(42203))
    );

    // A soft-deleted version is gone from the lists, and still known with ?deleted=true.
    let (_, deleted) = call(reqwest::Method::DELETE, format!("{versions}/3"), None).await;
    assert_eq!(deleted, json!(3));
    assert_eq!(get(versions.clone()).await.1, json!([1, 2]));
    assert_eq!(
        get(format!("{versions}?deleted=true")).await.1,
        json!([1, 2, 3])
    );

    // A registry started again on the same topic knows all of it.
    let again = serve(&b.bootstrap).await;
    assert_eq!(
        get(format!("{again}/subjects")).await.1,
        json!(["copy-value", SUBJECT])
    );
    assert_eq!(
        get(format!("{again}/subjects/{SUBJECT}/versions")).await.1,
        json!([1, 2])
    );
    let (_, latest) = get(format!("{again}/subjects/{SUBJECT}/versions/latest")).await;
    assert_eq!(
        (latest["version"].clone(), latest["id"].clone()),
        (json!(2), json!(2))
    );
    let mut v4 = v2.clone();
    v4["properties"]["gift"] = json!({"type": "boolean"});
    assert_eq!(
        post(
            format!("{again}/subjects/{SUBJECT}/versions"),
            schema_body(&v4)
        )
        .await
        .1,
        json!({"id": 4}),
        "ids go on from the replayed ones"
    );
}

/// The client the services use: register, then find a schema by id (cached), and the
/// registry's refusal as an error with its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_registers_and_finds_schemas_by_id() {
    let b = broker().await;
    let base = serve(&b.bootstrap).await;
    let client = RegistryClient::new(&base);
    let id = client
        .register("payment.completed-value", &v1())
        .await
        .unwrap();
    assert_eq!(
        client
            .register("payment.completed-value", &v1())
            .await
            .unwrap(),
        id
    );
    assert_eq!(RegistryClient::new(&base).schema(id).await.unwrap(), v1());
    assert_eq!(
        client.versions_of(id).await.unwrap(),
        vec![("payment.completed-value".to_owned(), 1)]
    );
    let mut retyped = v1();
    retyped["properties"]["total"] = json!({"type": "string"});
    match client.register("payment.completed-value", &retyped).await {
        Err(ClientError::Refused {
            status: 409,
            error_code: Some(409),
            message,
        }) => assert!(message.contains("total"), "{message}"),
        other => panic!("expected a 409, got {other:?}"),
    }
    match RegistryClient::new(&base).schema(42).await {
        Err(ClientError::Refused {
            status: 404,
            error_code: Some(40403),
            ..
        }) => {}
        other => panic!("expected a 404, got {other:?}"),
    }
}
