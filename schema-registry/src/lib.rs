//! A schema registry with the Confluent Schema Registry REST API, for JSON Schema, kept in the
//! compacted topic `_schemas` of any Kafka-protocol broker.
//!
//! Subjects hold versions of a schema; each distinct schema has one global id; a new version is
//! checked against the subject's compatibility level before it is kept ([`compat`]). Producers
//! write records in Confluent's wire format ([`wire`]): a zero byte, the schema id (4 bytes, big
//! endian), then the payload, so any Confluent-aware tool finds a record's schema. See
//! `docs/schema-registry.md`.

pub mod api;
pub mod client;
pub mod compat;
pub mod store;
pub mod wire;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Mutex;

use compat::Level;
use store::{SchemaRecord, State, Store, StoreError};

/// The level of a subject (or the registry) that sets none: Confluent's default.
pub const DEFAULT_LEVEL: Level = Level::Backward;

/// The registry: what it knows and where it writes it.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    store: Store,
}

/// What the registry refuses, with Confluent's error codes (the HTTP status is the code's first
/// three digits).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectLevelNotFound(String),
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error("Invalid compatibility level: {0}")]
    InvalidLevel(String),
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: {}",
        details.join("; ")
    )]
    Incompatible {
        subject: String,
        details: Vec<String>,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// Confluent's `error_code`.
    pub fn code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound(_) => 40402,
            RegistryError::SchemaNotFound(_) => 40403,
            RegistryError::SubjectLevelNotFound(_) => 40408,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::InvalidSchema(_) => 42201,
            RegistryError::InvalidVersion(_) => 42202,
            RegistryError::InvalidLevel(_) => 42203,
            RegistryError::Store(_) => 50001,
        }
    }
}

/// A schema as a client gives it: its text and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSchema {
    pub schema: String,
    /// `JSON`; Confluent's default when a client names none is `AVRO`, which is refused here.
    pub schema_type: String,
}

/// A version as the API answers it.
pub type Version = SchemaRecord;

/// The schema text parsed, or why it is not one this registry keeps.
fn parse(new: &NewSchema) -> Result<Value, RegistryError> {
    if new.schema_type != "JSON" {
        return Err(RegistryError::InvalidSchema(format!(
            "{} schemas are not kept here; this registry keeps JSON Schema (\"schemaType\": \"JSON\")",
            new.schema_type
        )));
    }
    let value: Value = serde_json::from_str(&new.schema)
        .map_err(|e| RegistryError::InvalidSchema(format!("not JSON: {e}")))?;
    if !value.is_object() && !value.is_boolean() {
        return Err(RegistryError::InvalidSchema(
            "a JSON Schema is an object (or true/false)".into(),
        ));
    }
    Ok(value)
}

/// Parses a version in a path: a number from 1, `latest` or -1.
pub fn parse_version(text: &str) -> Result<Option<i32>, RegistryError> {
    match text {
        "latest" | "-1" => Ok(None),
        n => n
            .parse::<i32>()
            .ok()
            .filter(|v| *v >= 1)
            .map(Some)
            .ok_or_else(|| RegistryError::InvalidVersion(n.into())),
    }
}

impl Registry {
    /// Opens the registry on `brokers`: creates `_schemas` if needed and replays it.
    pub async fn open(brokers: &str) -> Result<Registry, RegistryError> {
        let (store, state) = Store::open(brokers).await?;
        Ok(Registry {
            inner: Arc::new(Mutex::new(Inner { state, store })),
        })
    }

    /// The subjects with a version not deleted (with `deleted`, all).
    pub async fn subjects(&self, deleted: bool) -> Vec<String> {
        let inner = self.inner.lock().await;
        inner
            .state
            .subjects
            .iter()
            .filter(|(_, versions)| deleted || versions.values().any(|r| !r.deleted))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// The subject's live versions (with `deleted`, all), oldest first.
    pub async fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<i32>, RegistryError> {
        let inner = self.inner.lock().await;
        let versions: Vec<i32> = inner
            .state
            .subjects
            .get(subject)
            .map(|v| {
                v.values()
                    .filter(|r| deleted || !r.deleted)
                    .map(|r| r.version)
                    .collect()
            })
            .unwrap_or_default();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.into()));
        }
        Ok(versions)
    }

    /// One version (`None`: the latest live one).
    pub async fn version(
        &self,
        subject: &str,
        version: Option<i32>,
    ) -> Result<Version, RegistryError> {
        let inner = self.inner.lock().await;
        find_version(&inner.state, subject, version).cloned()
    }

    /// The schema of `id`.
    pub async fn schema_by_id(&self, id: i32) -> Result<Version, RegistryError> {
        let inner = self.inner.lock().await;
        inner
            .state
            .by_id(id)
            .cloned()
            .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
    }

    /// Each `(subject, version)` that holds schema `id`.
    pub async fn versions_of_id(&self, id: i32) -> Result<Vec<(String, i32)>, RegistryError> {
        let inner = self.inner.lock().await;
        let found: Vec<(String, i32)> = inner
            .state
            .subjects
            .values()
            .flat_map(|v| v.values())
            .filter(|r| r.id == id && !r.deleted)
            .map(|r| (r.subject.clone(), r.version))
            .collect();
        if found.is_empty() {
            return Err(RegistryError::SchemaNotFound(id.to_string()));
        }
        Ok(found)
    }

    /// Registers `new` under `subject`: the id of the same schema if the subject has it
    /// already, else a new version, once it passes the subject's compatibility level.
    pub async fn register(&self, subject: &str, new: &NewSchema) -> Result<i32, RegistryError> {
        let value = parse(new)?;
        let mut inner = self.inner.lock().await;
        let live: Vec<&SchemaRecord> = inner
            .state
            .subjects
            .get(subject)
            .map(|v| v.values().filter(|r| !r.deleted).collect())
            .unwrap_or_default();
        if let Some(same) = live.iter().find(|r| same_schema(&r.schema, &value)) {
            return Ok(same.id);
        }
        let level = level_of(&inner.state, subject);
        let earlier: Vec<Value> = live
            .iter()
            .filter_map(|r| serde_json::from_str(&r.schema).ok())
            .collect();
        let details = compat::check(level, &value, &earlier.iter().collect::<Vec<_>>());
        if !details.is_empty() {
            return Err(RegistryError::Incompatible {
                subject: subject.into(),
                details,
            });
        }
        // The same schema elsewhere keeps its id.
        let id = inner
            .state
            .subjects
            .values()
            .flat_map(|v| v.values())
            .find(|r| same_schema(&r.schema, &value))
            .map(|r| r.id)
            .unwrap_or_else(|| inner.state.next_id());
        let version = inner
            .state
            .subjects
            .get(subject)
            .and_then(|v| v.keys().max())
            .map_or(1, |v| v + 1);
        let record = SchemaRecord {
            subject: subject.into(),
            version,
            id,
            schema_type: "JSON".into(),
            schema: value.to_string(),
            deleted: false,
        };
        let key = store::schema_key(subject, version);
        let text = serde_json::to_string(&record).expect("a record serializes");
        inner.store.write(&key, Some(&text)).await?;
        inner.state.apply(key.as_bytes(), Some(text.as_bytes()));
        tracing::info!(subject, version, id, "registered a schema");
        Ok(id)
    }

    /// The version of `subject` that holds `new`, if one does.
    pub async fn lookup(&self, subject: &str, new: &NewSchema) -> Result<Version, RegistryError> {
        let value = parse(new)?;
        let inner = self.inner.lock().await;
        let versions = inner
            .state
            .subjects
            .get(subject)
            .filter(|v| v.values().any(|r| !r.deleted))
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.into()))?;
        versions
            .values()
            .find(|r| !r.deleted && same_schema(&r.schema, &value))
            .cloned()
            .ok_or_else(|| RegistryError::SchemaNotFound(format!("for subject '{subject}'")))
    }

    /// Whether `new` may follow `version` of `subject` (`None`: the latest) at the subject's
    /// level: the problems, none if it may.
    pub async fn check(
        &self,
        subject: &str,
        version: Option<i32>,
        new: &NewSchema,
    ) -> Result<Vec<String>, RegistryError> {
        let value = parse(new)?;
        let inner = self.inner.lock().await;
        let level = level_of(&inner.state, subject);
        let against = find_version(&inner.state, subject, version)?;
        let old: Value = serde_json::from_str(&against.schema)
            .map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
        // One version given: the level's direction, against that version alone.
        let single = match level {
            Level::BackwardTransitive => Level::Backward,
            Level::ForwardTransitive => Level::Forward,
            Level::FullTransitive => Level::Full,
            other => other,
        };
        Ok(compat::check(single, &value, &[&old]))
    }

    /// Deletes a version (soft: marked deleted; `permanent`: a soft-deleted one is removed).
    /// Returns the version.
    pub async fn delete_version(
        &self,
        subject: &str,
        version: Option<i32>,
        permanent: bool,
    ) -> Result<i32, RegistryError> {
        let mut inner = self.inner.lock().await;
        let record = if permanent {
            let version = version.ok_or_else(|| RegistryError::InvalidVersion("latest".into()))?;
            inner
                .state
                .subjects
                .get(subject)
                .and_then(|v| v.get(&version))
                .cloned()
                .ok_or_else(|| RegistryError::VersionNotFound(version.to_string()))?
        } else {
            find_version(&inner.state, subject, version)?.clone()
        };
        let key = store::schema_key(subject, record.version);
        if permanent {
            inner.store.write(&key, None).await?;
            inner.state.apply(key.as_bytes(), None);
        } else {
            let text = serde_json::to_string(&SchemaRecord {
                deleted: true,
                ..record.clone()
            })
            .expect("a record serializes");
            inner.store.write(&key, Some(&text)).await?;
            inner.state.apply(key.as_bytes(), Some(text.as_bytes()));
        }
        Ok(record.version)
    }

    /// Deletes every version of a subject; returns them.
    pub async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<i32>, RegistryError> {
        let versions = self.versions(subject, permanent).await?;
        for version in &versions {
            self.delete_version(subject, Some(*version), permanent)
                .await?;
        }
        Ok(versions)
    }

    /// The level of `subject` (`None`: the registry's), as set or the default.
    pub async fn level(&self, subject: Option<&str>) -> Level {
        let inner = self.inner.lock().await;
        match subject {
            Some(s) => level_of(&inner.state, s),
            None => inner.state.global.unwrap_or(DEFAULT_LEVEL),
        }
    }

    /// The level set on `subject` itself, if one is.
    pub async fn subject_level(&self, subject: &str) -> Result<Level, RegistryError> {
        let inner = self.inner.lock().await;
        inner
            .state
            .levels
            .get(subject)
            .copied()
            .ok_or_else(|| RegistryError::SubjectLevelNotFound(subject.into()))
    }

    /// Sets the level of `subject` (`None`: the registry's).
    pub async fn set_level(
        &self,
        subject: Option<&str>,
        level: Level,
    ) -> Result<(), RegistryError> {
        let mut inner = self.inner.lock().await;
        let key = store::config_key(subject);
        let text = serde_json::json!({"compatibilityLevel": level.name()}).to_string();
        inner.store.write(&key, Some(&text)).await?;
        inner.state.apply(key.as_bytes(), Some(text.as_bytes()));
        Ok(())
    }

    /// Removes `subject`'s own level (it follows the registry's again); returns the old one.
    pub async fn clear_level(&self, subject: &str) -> Result<Level, RegistryError> {
        let old = self.subject_level(subject).await?;
        let mut inner = self.inner.lock().await;
        let key = store::config_key(Some(subject));
        inner.store.write(&key, None).await?;
        inner.state.apply(key.as_bytes(), None);
        Ok(old)
    }
}

fn level_of(state: &State, subject: &str) -> Level {
    state
        .levels
        .get(subject)
        .copied()
        .or(state.global)
        .unwrap_or(DEFAULT_LEVEL)
}

fn find_version<'a>(
    state: &'a State,
    subject: &str,
    version: Option<i32>,
) -> Result<&'a SchemaRecord, RegistryError> {
    let versions = state
        .subjects
        .get(subject)
        .filter(|v| v.values().any(|r| !r.deleted))
        .ok_or_else(|| RegistryError::SubjectNotFound(subject.into()))?;
    match version {
        None => versions.values().rev().find(|r| !r.deleted),
        Some(v) => versions.get(&v).filter(|r| !r.deleted),
    }
    .ok_or_else(|| {
        RegistryError::VersionNotFound(version.map_or("latest".into(), |v| v.to_string()))
    })
}

/// Whether stored schema text and a parsed schema are the same schema (as JSON values: key
/// order and spacing do not count).
fn same_schema(stored: &str, value: &Value) -> bool {
    serde_json::from_str::<Value>(stored).is_ok_and(|s| &s == value)
}
