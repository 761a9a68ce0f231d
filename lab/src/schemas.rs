//! The schema registry as the lab shows it: each subject with its level and versions (the
//! dashboard's Schemas view), and what changed between two versions (`lab schema diff`, the
//! dashboard's diff).

use std::collections::BTreeMap;

use schema_registry::client::{ClientError, RegistryClient};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A subject as the dashboard shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subject {
    pub subject: String,
    /// Its compatibility level (its own, else the registry's).
    pub level: String,
    pub versions: Vec<SubjectVersion>,
}

/// One version of a subject, with its schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubjectVersion {
    pub version: i32,
    pub id: i32,
    pub schema: Value,
}

/// Every subject of the registry at `url`, with its level and versions.
pub async fn subjects(url: &str) -> Result<Vec<Subject>, ClientError> {
    let client = RegistryClient::new(url);
    let mut out = Vec::new();
    for subject in client.subjects().await? {
        let mut versions = Vec::new();
        for v in client.versions(&subject).await? {
            let found = client.version(&subject, &v.to_string()).await?;
            versions.push(SubjectVersion {
                version: found.version,
                id: found.id,
                schema: found.schema,
            });
        }
        let level = client.level(&subject).await?;
        out.push(Subject {
            subject,
            level,
            versions,
        });
    }
    Ok(out)
}

/// The version of `topic`'s value subject that schema `id` is, asked of the registry at `client`.
pub async fn version_of(client: &RegistryClient, topic: &str, id: i32) -> Option<i32> {
    let subject = saga_shared::schemas::subject(topic);
    let found = client.versions_of(id).await.ok()?;
    found
        .into_iter()
        .find_map(|(s, v)| (s == subject).then_some(v))
}

/// One line per property that differs from `old` to `new`, at the top and in `$defs`: `+` added,
/// `-` removed, `~` retyped or made required or optional.
pub fn diff(old: &Value, new: &Value) -> Vec<String> {
    let mut lines = diff_object("", old, new);
    let defs = |v: &Value| v.get("$defs").and_then(Value::as_object).cloned();
    let (old_defs, new_defs) = (defs(old).unwrap_or_default(), defs(new).unwrap_or_default());
    for (name, schema) in &new_defs {
        if let Some(before) = old_defs.get(name) {
            lines.extend(diff_object(&format!("{name}."), before, schema));
        }
    }
    if lines.is_empty() {
        lines.push("  (no change)".into());
    }
    lines
}

fn diff_object(prefix: &str, old: &Value, new: &Value) -> Vec<String> {
    let props = |v: &Value| -> BTreeMap<String, Value> {
        v.get("properties")
            .and_then(Value::as_object)
            .map(|m| m.clone().into_iter().collect())
            .unwrap_or_default()
    };
    let required = |v: &Value, name: &str| {
        v.get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|x| x == name))
    };
    let need = |yes: bool| if yes { "required" } else { "optional" };
    let (before, after) = (props(old), props(new));
    let mut lines = Vec::new();
    for (name, schema) in &after {
        let now = need(required(new, name));
        match before.get(name) {
            None => lines.push(format!("+ {prefix}{name}: {} ({now})", kind(schema))),
            Some(was) => {
                let then = need(required(old, name));
                if kind(was) != kind(schema) {
                    lines.push(format!(
                        "~ {prefix}{name}: {} -> {}",
                        kind(was),
                        kind(schema)
                    ));
                }
                if then != now {
                    lines.push(format!("~ {prefix}{name}: {then} -> {now}"));
                }
            }
        }
    }
    for (name, schema) in &before {
        if !after.contains_key(name) {
            let then = need(required(old, name));
            lines.push(format!("- {prefix}{name}: {} ({then})", kind(schema)));
        }
    }
    lines
}

/// A property's type in a word or two: `string`, `integer | null`, `array of LineItem`.
pub fn kind(schema: &Value) -> String {
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        return target.rsplit('/').next().unwrap_or(target).to_owned();
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".to_owned(),
    };
    match schema.get("items") {
        Some(items) if ty.starts_with("array") => format!("array of {}", kind(items)),
        _ => ty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The order service's `order.created` schema, as it registers it.
    fn v1() -> Value {
        saga_shared::events::Topic::OrderCreated.json_schema()
    }

    #[test]
    fn a_diff_names_each_property_added_removed_or_retyped() {
        let mut v2 = v1();
        v2["properties"]["note"] = json!({"type": "string"});
        v2["properties"]["total"] = json!({"type": "string"});
        v2["properties"].as_object_mut().unwrap().remove("items");
        v2["$defs"]["LineItem"]["properties"]["sku"] = json!({"type": ["string", "null"]});
        assert_eq!(
            diff(&v1(), &v2),
            [
                "+ note: string (optional)",
                "~ total: Won -> string",
                "- items: array of LineItem (required)",
                "~ LineItem.sku: Sku -> string | null",
            ]
        );
        assert_eq!(diff(&v1(), &v1()), ["  (no change)"]);
    }
}
