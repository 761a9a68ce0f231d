//! A client of the registry's REST API (this one's or Confluent's): what a service needs to
//! register its schemas at start and to find the schema of a record it reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// Why a call to the registry failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the schema registry at {url} did not answer: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the schema registry refused ({status}): {message}")]
    Refused {
        status: u16,
        error_code: Option<i64>,
        message: String,
    },
}

/// One version of a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectVersion {
    pub version: i32,
    pub id: i32,
    pub schema: Value,
}

/// A registry at `base` (like `http://127.0.0.1:8085`), with the schemas it looked up cached
/// by id (a schema id never changes meaning).
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
    by_id: Arc<Mutex<HashMap<i32, Value>>>,
}

impl RegistryClient {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            by_id: Arc::default(),
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<Value, ClientError> {
        let response = request
            .header("content-type", crate::api::CONTENT_TYPE)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.to_owned(),
                source,
            })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ClientError::Refused {
                status: status.as_u16(),
                error_code: body.get("error_code").and_then(Value::as_i64),
                message: body
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .to_owned(),
            });
        }
        Ok(body)
    }

    /// Registers JSON Schema `schema` under `subject`; its id.
    pub async fn register(&self, subject: &str, schema: &Value) -> Result<i32, ClientError> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = json!({"schemaType": "JSON", "schema": schema.to_string()});
        let answer = self.call(self.http.post(&url).json(&body), &url).await?;
        let id = answer.get("id").and_then(Value::as_i64).unwrap_or(-1) as i32;
        self.by_id.lock().unwrap().insert(id, schema.clone());
        Ok(id)
    }

    /// The schema of `id` (asked once, then from the cache).
    pub async fn schema(&self, id: i32) -> Result<Value, ClientError> {
        if let Some(known) = self.by_id.lock().unwrap().get(&id) {
            return Ok(known.clone());
        }
        let url = format!("{}/schemas/ids/{id}", self.base);
        let answer = self.call(self.http.get(&url), &url).await?;
        let schema: Value = answer
            .get("schema")
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        self.by_id.lock().unwrap().insert(id, schema.clone());
        Ok(schema)
    }

    /// Every subject, by name.
    pub async fn subjects(&self) -> Result<Vec<String>, ClientError> {
        let url = format!("{}/subjects", self.base);
        let answer = self.call(self.http.get(&url), &url).await?;
        Ok(serde_json::from_value(answer).unwrap_or_default())
    }

    /// The version numbers of `subject`.
    pub async fn versions(&self, subject: &str) -> Result<Vec<i32>, ClientError> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let answer = self.call(self.http.get(&url), &url).await?;
        Ok(serde_json::from_value(answer).unwrap_or_default())
    }

    /// Version `version` of `subject` (`"latest"` or a number): its number, id and schema.
    pub async fn version(
        &self,
        subject: &str,
        version: &str,
    ) -> Result<SubjectVersion, ClientError> {
        let url = format!("{}/subjects/{subject}/versions/{version}", self.base);
        let answer = self.call(self.http.get(&url), &url).await?;
        let field = |name: &str| answer.get(name).and_then(Value::as_i64).unwrap_or(-1) as i32;
        Ok(SubjectVersion {
            version: field("version"),
            id: field("id"),
            schema: answer
                .get("schema")
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Null),
        })
    }

    /// What keeps `schema` from being `subject`'s next version under its compatibility level
    /// (nothing: it may be registered).
    pub async fn check(&self, subject: &str, schema: &Value) -> Result<Vec<String>, ClientError> {
        let url = format!(
            "{}/compatibility/subjects/{subject}/versions/latest?verbose=true",
            self.base
        );
        let body = json!({"schemaType": "JSON", "schema": schema.to_string()});
        let answer = self.call(self.http.post(&url).json(&body), &url).await?;
        Ok(answer
            .get("messages")
            .and_then(|m| serde_json::from_value(m.clone()).ok())
            .unwrap_or_default())
    }

    /// The compatibility level `subject` is checked at (its own, else the registry's).
    pub async fn level(&self, subject: &str) -> Result<String, ClientError> {
        let url = format!("{}/config/{subject}?defaultToGlobal=true", self.base);
        let answer = self.call(self.http.get(&url), &url).await?;
        Ok(answer
            .get("compatibilityLevel")
            .and_then(Value::as_str)
            .unwrap_or("BACKWARD")
            .to_owned())
    }

    /// Sets `subject`'s compatibility level (Confluent's names: `BACKWARD`, `NONE`, ...).
    pub async fn set_level(&self, subject: &str, level: &str) -> Result<(), ClientError> {
        let url = format!("{}/config/{subject}", self.base);
        let body = json!({ "compatibility": level });
        self.call(self.http.put(&url).json(&body), &url).await?;
        Ok(())
    }

    /// Each `(subject, version)` holding schema `id`.
    pub async fn versions_of(&self, id: i32) -> Result<Vec<(String, i32)>, ClientError> {
        let url = format!("{}/schemas/ids/{id}/versions", self.base);
        let answer = self.call(self.http.get(&url), &url).await?;
        Ok(answer
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|v| {
                        Some((
                            v.get("subject")?.as_str()?.to_owned(),
                            v.get("version")?.as_i64()? as i32,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}
