//! The HTTP API: Confluent Schema Registry's routes, bodies and error format
//! (`{"error_code": 40401, "message": "..."}`, the HTTP status being the code's first three
//! digits), so Confluent's serializers, `kcat -r`, Kafka UI and the like work against it.
//! Bodies are read as JSON whatever their content type (`application/json`,
//! `application/vnd.schemaregistry.v1+json`); answers are `application/vnd.schemaregistry.v1+json`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::compat::Level;
use crate::{NewSchema, Registry, RegistryError, Version, parse_version};

/// The answers' content type.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Every route, on `registry`.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/", get(|| async { answer(json!({})) }))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route("/schemas/types", get(|| async { answer(json!(["JSON"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility),
        )
        .route("/config", get(global_level).put(set_global_level))
        .route(
            "/config/{subject}",
            get(subject_level)
                .put(set_subject_level)
                .delete(clear_subject_level),
        )
        .fallback(|| async { Failure(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found".into()) })
        .with_state(registry)
}

/// Serves `registry` on `listener` in a task of its own, until it is aborted; a failure to
/// serve is logged.
pub fn spawn(listener: tokio::net::TcpListener, registry: Registry) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(registry)).await {
            tracing::error!("the schema registry stopped: {e}");
        }
    })
}

fn answer(body: Value) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

/// An error as Confluent's registry says it.
struct Failure(StatusCode, u32, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = json!({"error_code": self.1, "message": self.2});
        (
            self.0,
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            body.to_string(),
        )
            .into_response()
    }
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        let code = e.code();
        let http = if code >= 10_000 { code / 100 } else { code };
        let status = StatusCode::from_u16(http as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &e {
            // The storage's own words stay in the log.
            RegistryError::Store(inner) => {
                tracing::error!("schema registry storage: {inner}");
                "Error while storing the schema; try again".to_owned()
            }
            e => e.to_string(),
        };
        Failure(status, code, message)
    }
}

type Answer = Result<Response, Failure>;

/// A request body that is not the JSON asked for.
fn unreadable(e: impl std::fmt::Display) -> Failure {
    Failure(
        StatusCode::UNPROCESSABLE_ENTITY,
        422,
        format!("Unprocessable entity: {e}"),
    )
}

/// `{"schema": "...", "schemaType": "JSON", "references": []}`.
#[derive(Debug, Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

fn new_schema(body: &Bytes) -> Result<NewSchema, Failure> {
    let body: SchemaBody = serde_json::from_slice(body).map_err(unreadable)?;
    if !body.references.is_empty() {
        return Err(RegistryError::InvalidSchema(
            "schema references are not served; give the schema whole".into(),
        )
        .into());
    }
    Ok(NewSchema {
        schema: body.schema,
        // Confluent's default, which this registry refuses with a clear message.
        schema_type: body.schema_type.unwrap_or_else(|| "AVRO".into()),
    })
}

/// The query's flags. Read as Confluent's registry (JAX-RS, Java's `Boolean.valueOf`) reads
/// them: `true` in any case is true, anything else false, never an error (Confluent's Python
/// client sends `verbose=True`).
#[derive(Debug, Deserialize)]
struct Flags {
    #[serde(default, deserialize_with = "java_bool")]
    deleted: bool,
    #[serde(default, deserialize_with = "java_bool")]
    permanent: bool,
    #[serde(default, deserialize_with = "java_bool")]
    verbose: bool,
}

fn java_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let text = String::deserialize(d)?;
    Ok(text.eq_ignore_ascii_case("true"))
}

fn version_json(v: &Version) -> Value {
    json!({
        "subject": v.subject,
        "version": v.version,
        "id": v.id,
        "schemaType": v.schema_type,
        "schema": v.schema,
    })
}

async fn subjects(State(r): State<Registry>, Query(f): Query<Flags>) -> Answer {
    Ok(answer(json!(r.subjects(f.deleted).await)))
}

async fn versions(
    State(r): State<Registry>,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> Answer {
    Ok(answer(json!(r.versions(&subject, f.deleted).await?)))
}

async fn version(State(r): State<Registry>, Path((subject, v)): Path<(String, String)>) -> Answer {
    let v = r.version(&subject, parse_version(&v)?).await?;
    Ok(answer(version_json(&v)))
}

async fn version_schema(
    State(r): State<Registry>,
    Path((subject, v)): Path<(String, String)>,
) -> Answer {
    let v = r.version(&subject, parse_version(&v)?).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], v.schema).into_response())
}

async fn register(State(r): State<Registry>, Path(subject): Path<String>, body: Bytes) -> Answer {
    let id = r.register(&subject, &new_schema(&body)?).await?;
    Ok(answer(json!({"id": id})))
}

async fn lookup(State(r): State<Registry>, Path(subject): Path<String>, body: Bytes) -> Answer {
    let v = r.lookup(&subject, &new_schema(&body)?).await?;
    Ok(answer(version_json(&v)))
}

async fn delete_subject(
    State(r): State<Registry>,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> Answer {
    Ok(answer(json!(
        r.delete_subject(&subject, f.permanent).await?
    )))
}

async fn delete_version(
    State(r): State<Registry>,
    Path((subject, v)): Path<(String, String)>,
    Query(f): Query<Flags>,
) -> Answer {
    let version = r
        .delete_version(&subject, parse_version(&v)?, f.permanent)
        .await?;
    Ok(answer(json!(version)))
}

fn id_of(text: &str) -> Result<i32, Failure> {
    text.parse()
        .map_err(|_| RegistryError::SchemaNotFound(text.into()).into())
}

async fn schema_by_id(State(r): State<Registry>, Path(id): Path<String>) -> Answer {
    let v = r.schema_by_id(id_of(&id)?).await?;
    Ok(answer(
        json!({"schemaType": v.schema_type, "schema": v.schema}),
    ))
}

async fn raw_schema_by_id(State(r): State<Registry>, Path(id): Path<String>) -> Answer {
    let v = r.schema_by_id(id_of(&id)?).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], v.schema).into_response())
}

async fn versions_of_id(State(r): State<Registry>, Path(id): Path<String>) -> Answer {
    let found = r.versions_of_id(id_of(&id)?).await?;
    let list: Vec<Value> = found
        .into_iter()
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect();
    Ok(answer(json!(list)))
}

async fn compatibility(
    State(r): State<Registry>,
    Path((subject, v)): Path<(String, String)>,
    Query(f): Query<Flags>,
    body: Bytes,
) -> Answer {
    let problems = r
        .check(&subject, parse_version(&v)?, &new_schema(&body)?)
        .await?;
    let mut body = json!({"is_compatible": problems.is_empty()});
    if f.verbose {
        body["messages"] = json!(problems);
    }
    Ok(answer(body))
}

/// `{"compatibility": "FULL"}` (Confluent also takes `compatibilityLevel`).
fn level_body(body: &Bytes) -> Result<Level, Failure> {
    let value: Value = serde_json::from_slice(body).map_err(unreadable)?;
    let name = value
        .get("compatibility")
        .or_else(|| value.get("compatibilityLevel"))
        .and_then(Value::as_str)
        .ok_or_else(|| unreadable("expected {\"compatibility\": \"BACKWARD\"}"))?;
    Level::parse(name).ok_or_else(|| RegistryError::InvalidLevel(name.into()).into())
}

async fn global_level(State(r): State<Registry>) -> Answer {
    Ok(answer(
        json!({"compatibilityLevel": r.level(None).await.name()}),
    ))
}

async fn set_global_level(State(r): State<Registry>, body: Bytes) -> Answer {
    let level = level_body(&body)?;
    r.set_level(None, level).await?;
    Ok(answer(json!({"compatibility": level.name()})))
}

#[derive(Debug, Deserialize)]
struct LevelQuery {
    #[serde(default, rename = "defaultToGlobal", deserialize_with = "java_bool")]
    default_to_global: bool,
}

async fn subject_level(
    State(r): State<Registry>,
    Path(subject): Path<String>,
    Query(q): Query<LevelQuery>,
) -> Answer {
    let level = if q.default_to_global {
        r.level(Some(&subject)).await
    } else {
        r.subject_level(&subject).await?
    };
    Ok(answer(json!({"compatibilityLevel": level.name()})))
}

async fn set_subject_level(
    State(r): State<Registry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Answer {
    let level = level_body(&body)?;
    r.set_level(Some(&subject), level).await?;
    Ok(answer(json!({"compatibility": level.name()})))
}

async fn clear_subject_level(State(r): State<Registry>, Path(subject): Path<String>) -> Answer {
    let old = r.clear_level(&subject).await?;
    Ok(answer(json!({"compatibilityLevel": old.name()})))
}
