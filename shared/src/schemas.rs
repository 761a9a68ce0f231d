//! The events' JSON Schemas, generated from their Rust types (one source of truth), and what a
//! service does with them and a schema registry: registers them at start, frames the records
//! it writes with their ids (Confluent's wire format) and checks the id of each record it reads.
//!
//! A schema is the type's `utoipa` schema (the same one the OpenAPI documents show) made a
//! JSON Schema document: draft 2020-12, the types it uses under `$defs`, and every object
//! closed (`additionalProperties: false`). A closed content model is what lets a new optional
//! field pass Confluent's backward compatibility check: an open one already allows any extra
//! property, so a property added to it may clash with what old writers put there.

use std::collections::HashMap;
use std::sync::Mutex;

use schema_registry::client::{ClientError, RegistryClient};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::events::Topic;

/// The JSON Schema dialect of the documents.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// `T`'s JSON Schema document.
pub fn of<T: ToSchema>() -> Value {
    let mut defs = Vec::new();
    T::schemas(&mut defs);
    let mut root = serde_json::to_value(T::schema()).expect("a schema is JSON");
    let mut named = Map::new();
    for (name, schema) in defs {
        let mut schema = serde_json::to_value(schema).expect("a schema is JSON");
        normalise(&mut schema);
        named.insert(name, schema);
    }
    normalise(&mut root);
    let Value::Object(body) = root else {
        unreachable!("a type's schema is an object")
    };
    let mut doc = Map::new();
    doc.insert("$schema".into(), json!(DIALECT));
    doc.insert("title".into(), json!(T::name()));
    doc.extend(body);
    if !named.is_empty() {
        doc.insert("$defs".into(), Value::Object(named));
    }
    Value::Object(doc)
}

/// OpenAPI's component references made the document's own (`#/$defs/Name`), and every object
/// with properties closed.
fn normalise(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref")
                && let Some(name) = target.strip_prefix("#/components/schemas/")
            {
                *target = format!("#/$defs/{name}");
            }
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(normalise);
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// Bytes of Confluent's frame before the payload: the magic byte and the schema id.
pub const FRAME_LEN: usize = schema_registry::wire::HEADER_LEN;

/// The schema id and payload of a value in Confluent's wire format; `None` for a plain value
/// (a JSON payload starts with `{`, never with the magic zero byte).
pub fn unframe(value: &[u8]) -> Option<(i32, &[u8])> {
    schema_registry::wire::unframe(value)
}

/// `payload` in Confluent's wire format, written with schema `id`.
pub fn frame(id: i32, payload: &[u8]) -> Vec<u8> {
    schema_registry::wire::frame(id, payload)
}

/// A record value's payload: after the frame if it has one.
pub fn payload(value: &[u8]) -> &[u8] {
    unframe(value).map_or(value, |(_, payload)| payload)
}

/// The registry subject of a topic's values (Confluent's default `TopicNameStrategy`).
pub fn subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// `topic`'s schema as this service's decoder reads: an event's own properties are open (a
/// field it does not know is ignored, so old consumers read what a newer writer added), its
/// nested types as closed as the schema says (a line item with an unknown field is refused).
pub fn as_read(topic: Topic) -> Value {
    let mut schema = topic.json_schema();
    if let Some(map) = schema.as_object_mut() {
        map.remove("additionalProperties");
    }
    schema
}

/// Why a record's schema id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaRefusal {
    #[error("schema id {id} is unknown to the schema registry")]
    Unknown { id: i32 },
    #[error("schema id {id} is not a version of subject {subject}")]
    OtherSubject { id: i32, subject: String },
    #[error("schema id {id} cannot be read as this service's {topic}: {why}")]
    Incompatible { id: i32, topic: String, why: String },
}

/// A service's schemas and its registry: the id of each topic's schema it writes with, and a
/// verdict per schema id it read (a schema id never changes meaning, so each is asked once).
#[derive(Debug)]
pub struct Schemas {
    client: RegistryClient,
    /// By topic name.
    ids: HashMap<String, i32>,
    verdicts: Mutex<HashMap<(Topic, i32), Result<(), SchemaRefusal>>>,
}

impl Schemas {
    /// Registers the schema of every topic in `writes` (a topic's name and the schema of its
    /// values) under its subject (a schema the registry has already is answered with its id; an
    /// incompatible change is refused here, before anything is produced).
    pub async fn register(
        client: RegistryClient,
        writes: &[(&str, Value)],
    ) -> Result<Self, ClientError> {
        let mut ids = HashMap::new();
        for (topic, schema) in writes {
            let id = client.register(&subject(topic), schema).await?;
            ids.insert((*topic).to_owned(), id);
        }
        Ok(Self {
            client,
            ids,
            verdicts: Mutex::default(),
        })
    }

    /// The registry's address.
    pub fn url(&self) -> &str {
        self.client.url()
    }

    /// The id this service writes the records of the topic named `topic` with, if it
    /// registered it.
    pub fn id_of(&self, topic: &str) -> Option<i32> {
        self.ids.get(topic).copied()
    }

    /// The verdict on schema `id` for a record of `topic`, if known already.
    pub fn known(&self, topic: Topic, id: i32) -> Option<Result<(), SchemaRefusal>> {
        self.verdicts.lock().unwrap().get(&(topic, id)).cloned()
    }

    /// Decides about schema `id` for a record of `topic` (asking the registry, once): it must be
    /// a version of the topic's subject, and this service's schema must read what it describes.
    /// `Err` only when the registry cannot be asked (the record waits and is tried again).
    pub async fn judge(&self, topic: Topic, id: i32) -> Result<(), ClientError> {
        if self.known(topic, id).is_some() {
            return Ok(());
        }
        let verdict = match self.client.versions_of(id).await {
            Err(ClientError::Refused { status: 404, .. }) => Err(SchemaRefusal::Unknown { id }),
            Err(e) => return Err(e),
            Ok(versions) => {
                let subject = subject(topic.name());
                if versions.iter().any(|(s, _)| *s == subject) {
                    let writer = self.client.schema(id).await?;
                    let problems = schema_registry::compat::reads(&as_read(topic), &writer);
                    if problems.is_empty() {
                        Ok(())
                    } else {
                        Err(SchemaRefusal::Incompatible {
                            id,
                            topic: topic.name().to_owned(),
                            why: problems.join("; "),
                        })
                    }
                } else {
                    Err(SchemaRefusal::OtherSubject { id, subject })
                }
            }
        };
        self.verdicts.lock().unwrap().insert((topic, id), verdict);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::OrderCreated;

    #[test]
    fn an_events_schema_is_a_closed_json_schema_with_its_types_under_defs() {
        let doc = of::<OrderCreated>();
        assert_eq!(doc["$schema"], DIALECT);
        assert_eq!(doc["title"], "OrderCreated");
        assert_eq!(doc["type"], "object");
        assert_eq!(doc["additionalProperties"], false);
        let required: Vec<&str> = doc["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for field in ["order_id", "customer_id", "items", "total", "currency"] {
            assert!(required.contains(&field), "{field} in {required:?}");
        }
        let text = doc.to_string();
        assert!(!text.contains("#/components/"), "{text}");
        let line = &doc["$defs"]["LineItem"];
        assert_eq!(line["additionalProperties"], false, "{doc:#}");
        assert!(line["properties"]["quantity"].is_object(), "{doc:#}");
    }

    #[test]
    fn the_value_types_rules_are_in_the_schema() {
        use crate::domain::{MAX_QUANTITY, MAX_WON};
        let defs = &of::<OrderCreated>()["$defs"];
        assert_eq!(defs["Won"]["minimum"], 1, "{defs:#}");
        assert_eq!(defs["Won"]["maximum"], MAX_WON, "{defs:#}");
        assert_eq!(defs["Quantity"]["maximum"], MAX_QUANTITY, "{defs:#}");
        assert_eq!(defs["Sku"]["pattern"], "^[A-Za-z0-9_]{1,64}$", "{defs:#}");
        assert_eq!(defs["CustomerId"]["pattern"], "^[A-Za-z0-9_-]{1,64}$");
    }

    #[test]
    fn every_topics_schema_reads_itself_and_names_its_type() {
        for topic in Topic::ALL {
            let doc = topic.json_schema();
            assert_eq!(doc["type"], "object", "{topic}");
            let problems = schema_registry::compat::reads(&as_read(topic), &doc);
            assert!(problems.is_empty(), "{topic}: {problems:?}");
        }
    }
}
