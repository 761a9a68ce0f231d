//! `lab schema`: the schema registry as a learner looks at it. The subjects the services
//! registered, a version's schema, what changed between two versions, a change tried against
//! the registry's compatibility rules (and registered), a subject's level, and a record sent
//! again as a producer with another version of the schema would write it.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schema_registry::client::RegistryClient;
use serde_json::{Map, Value, json};

use crate::control::BrokerArg;
use lab::schemas::diff;

#[derive(Debug, Args)]
pub(crate) struct SchemaArgs {
    #[command(subcommand)]
    action: SchemaAction,
    /// The schema registry (the lab's, or Confluent's).
    #[arg(
        long,
        global = true,
        env = "LAB_SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:8085"
    )]
    registry: String,
}

#[derive(Debug, Subcommand)]
enum SchemaAction {
    /// Every subject with its versions and their ids.
    List,
    /// A version of a topic's schema (the latest by default), as JSON.
    Show {
        topic: String,
        #[arg(long, default_value = "latest")]
        version: String,
    },
    /// What changed from one version of a topic's schema to another, property by property.
    Diff { topic: String, from: i32, to: i32 },
    /// The latest version of a topic's schema with properties added (optional), removed or
    /// retyped, checked by the registry against the subject's compatibility level; registered
    /// as the next version with --register.
    Change(ChangeArgs),
    /// Sets the compatibility level of a topic's subject (BACKWARD, FORWARD, FULL, NONE, ...).
    Level { topic: String, level: String },
    /// Sends the newest record of a topic again (same key and headers, so the same event), its
    /// value written as a producer with another version of the schema would: new properties
    /// get a sample value, retyped ones are converted, and the frame carries that version's id.
    Send {
        topic: String,
        #[arg(long)]
        version: i32,
        #[command(flatten)]
        broker: BrokerArg,
    },
}

#[derive(Debug, Args)]
struct ChangeArgs {
    topic: String,
    /// NAME:TYPE, an optional property added (TYPE: string, integer, number, boolean).
    #[arg(long, value_name = "NAME:TYPE")]
    add: Vec<String>,
    /// A property removed.
    #[arg(long, value_name = "NAME")]
    remove: Vec<String>,
    /// NAME:TYPE, a property's type changed.
    #[arg(long, value_name = "NAME:TYPE")]
    retype: Vec<String>,
    /// Register the changed schema (refused by the registry if it is incompatible).
    #[arg(long)]
    register: bool,
}

pub(crate) async fn schema(args: SchemaArgs) -> anyhow::Result<()> {
    let client = RegistryClient::new(&args.registry);
    match args.action {
        SchemaAction::List => list(&client).await,
        SchemaAction::Show { topic, version } => {
            let v = client.version(&subject(&topic), &version).await?;
            println!("{}", serde_json::to_string_pretty(&v.schema)?);
            Ok(())
        }
        SchemaAction::Diff { topic, from, to } => {
            let subject = subject(&topic);
            let old = client.version(&subject, &from.to_string()).await?;
            let new = client.version(&subject, &to.to_string()).await?;
            println!("{subject}: version {from} -> {to}");
            for line in diff(&old.schema, &new.schema) {
                println!("{line}");
            }
            Ok(())
        }
        SchemaAction::Change(change) => try_change(&client, change).await,
        SchemaAction::Level { topic, level } => {
            let subject = subject(&topic);
            client.set_level(&subject, &level.to_uppercase()).await?;
            println!("{subject}: compatibility {}", level.to_uppercase());
            Ok(())
        }
        SchemaAction::Send {
            topic,
            version,
            broker,
        } => send(&client, &topic, version, &broker.brokers).await,
    }
}

/// A topic's value subject; a subject's name is taken as it is.
fn subject(topic: &str) -> String {
    if topic.ends_with("-value") || topic.ends_with("-key") {
        topic.to_owned()
    } else {
        saga_shared::schemas::subject(topic)
    }
}

/// Each subject with its versions and their ids, as the dashboard lists them.
async fn list(client: &RegistryClient) -> anyhow::Result<()> {
    for subject in lab::schemas::subjects(client.url()).await? {
        let shown: Vec<String> = subject
            .versions
            .iter()
            .map(|v| format!("v{} (id {})", v.version, v.id))
            .collect();
        println!("{}: {}", subject.subject, shown.join(", "));
    }
    Ok(())
}

async fn try_change(client: &RegistryClient, a: ChangeArgs) -> anyhow::Result<()> {
    let subject = subject(&a.topic);
    let latest = client.version(&subject, "latest").await?;
    let mut schema = latest.schema.clone();
    for spec in &a.add {
        let (name, ty) = name_and_type(spec)?;
        properties(&mut schema)?.insert(name.into(), json!({ "type": ty }));
    }
    for name in &a.remove {
        properties(&mut schema)?
            .remove(name)
            .with_context(|| format!("{subject} has no property {name}"))?;
        if let Some(Value::Array(required)) = schema.get_mut("required") {
            required.retain(|r| r != name);
        }
    }
    for spec in &a.retype {
        let (name, ty) = name_and_type(spec)?;
        let props = properties(&mut schema)?;
        anyhow::ensure!(props.contains_key(name), "{subject} has no property {name}");
        props.insert(name.into(), json!({ "type": ty }));
    }
    for line in diff(&latest.schema, &schema) {
        println!("{line}");
    }
    let problems = client.check(&subject, &schema).await?;
    let level = client.level(&subject).await?;
    let checked = if level == "NONE" {
        format!("{level}, nothing is checked")
    } else {
        level
    };
    if problems.is_empty() {
        println!(
            "compatible with version {} of {subject} ({checked})",
            latest.version
        );
    } else {
        println!(
            "incompatible with version {} of {subject} ({checked}):",
            latest.version
        );
        for p in &problems {
            println!("  {p}");
        }
    }
    if a.register {
        let id = client.register(&subject, &schema).await?;
        let now = client.version(&subject, "latest").await?;
        println!("registered: {subject} version {} (id {id})", now.version);
    }
    Ok(())
}

fn name_and_type(spec: &str) -> anyhow::Result<(&str, &str)> {
    let (name, ty) = spec
        .split_once(':')
        .with_context(|| format!("{spec}: give NAME:TYPE, e.g. note:string"))?;
    let types = ["string", "integer", "number", "boolean"];
    anyhow::ensure!(
        types.contains(&ty),
        "{ty}: a type is one of {}",
        types.join(", ")
    );
    Ok((name, ty))
}

fn properties(schema: &mut Value) -> anyhow::Result<&mut Map<String, Value>> {
    schema
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .context("the schema has no properties")
}

/// `value` as a producer with `schema` would write it: each property the schema has and the
/// value lacks gets a sample, each whose type differs is converted, and a property the schema
/// does not have is dropped when the schema is closed.
fn rewrite(value: &mut Map<String, Value>, schema: &Value) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, prop) in props {
        let ty = prop.get("type").and_then(Value::as_str).unwrap_or("");
        let converted = match (value.get(name), ty) {
            (None, "string") => json!("added in a later version"),
            (None, "integer" | "number") => json!(1),
            (None, "boolean") => json!(true),
            (Some(Value::Number(n)), "string") => json!(n.to_string()),
            (Some(Value::String(s)), "integer") => s.parse::<i64>().map_or(json!(0), |n| json!(n)),
            _ => continue,
        };
        value.insert(name.clone(), converted);
    }
    if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
        value.retain(|name, _| props.contains_key(name));
    }
}

async fn send(
    client: &RegistryClient,
    topic: &str,
    version: i32,
    brokers: &str,
) -> anyhow::Result<()> {
    let target = client
        .version(&subject(topic), &version.to_string())
        .await?;
    let (brokers_owned, topic_owned) = (brokers.to_owned(), topic.to_owned());
    let newest =
        tokio::task::spawn_blocking(move || newest_record(&brokers_owned, &topic_owned)).await??;
    let Some((key, headers, value)) = newest else {
        bail!("{topic} has no record to send again");
    };
    let mut json: Map<String, Value> =
        serde_json::from_slice(saga_shared::schemas::payload(&value))
            .with_context(|| format!("the newest record of {topic} is not a JSON object"))?;
    rewrite(&mut json, &target.schema);
    let framed = saga_shared::schemas::frame(target.id, &serde_json::to_vec(&json)?);
    let producer: FutureProducer = saga_shared::kafka::producer(brokers)?;
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(&framed);
    if let Some(key) = &key {
        record = record.key(key);
    }
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)?;
    println!(
        "sent {topic}'s newest event again, written with version {version} (id {})",
        target.id
    );
    println!("    {}", Value::Object(json));
    Ok(())
}

type Raw = (
    Option<Vec<u8>>,
    Option<rdkafka::message::OwnedHeaders>,
    Vec<u8>,
);

/// The newest record of `topic` (the latest timestamp among its partitions' last records).
fn newest_record(brokers: &str, topic: &str) -> anyhow::Result<Option<Raw>> {
    let consumer: BaseConsumer<lab::EndIsNotAnError> = saga_shared::kafka::client_config(brokers)
        .set("group.id", "lab-schema")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create_with_context(lab::EndIsNotAnError)?;
    let timeout = Duration::from_secs(5);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in lab::kafka::partitions_of(&consumer, topic, timeout)? {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        if high > low {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(high - 1))?;
        }
    }
    let wanted = tpl.count();
    if wanted == 0 {
        return Ok(None);
    }
    consumer.assign(&tpl)?;
    let mut newest: Option<(i64, Raw)> = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = 0;
    while seen < wanted && std::time::Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = result?;
        seen += 1;
        let ts = m.timestamp().to_millis().unwrap_or(0);
        if newest.as_ref().is_none_or(|(t, _)| ts > *t) {
            let raw = (
                m.key().map(<[u8]>::to_vec),
                m.headers().map(rdkafka::message::BorrowedHeaders::detach),
                m.payload().unwrap_or_default().to_vec(),
            );
            newest = Some((ts, raw));
        }
    }
    Ok(newest.map(|(_, raw)| raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_rewritten_as_a_later_version_writes_it() {
        let v2 = json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "order_id": {"type": "string"},
                "total": {"type": "string"},
                "items": {"type": "array"},
                "note": {"type": "string"}
            }
        });
        let mut value = json!({"order_id": "x", "total": 10000, "items": [], "stray": 1});
        rewrite(value.as_object_mut().unwrap(), &v2);
        assert_eq!(
            value,
            json!({"order_id": "x", "total": "10000", "items": [], "note": "added in a later version"})
        );
    }
}
