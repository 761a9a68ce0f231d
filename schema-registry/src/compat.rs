//! Whether one JSON Schema can read what another wrote: the registry's compatibility check.
//!
//! The rules follow Confluent's for JSON Schema, for what event schemas use (objects,
//! properties, `required`, `additionalProperties`, types, arrays, enums, nullable unions,
//! local `$ref`s), checked as "a reader with schema R reads data a writer with schema W wrote":
//!
//! | change from W to R | compatible? |
//! |---|---|
//! | a property added, optional, W closed (`additionalProperties: false`) | yes: W's data never has it |
//! | a property added, optional, W open | no: W's data may hold that name with another type |
//! | a property added and required | no: W's data lacks it |
//! | a property removed, R open | yes: R takes it as an extra property |
//! | a property removed, R closed | no: R refuses W's data, which has it |
//! | a type changed (`string` to `integer`) | no |
//! | a type widened (`integer` to `number`, a type added to a union, `null` allowed) | yes |
//! | a type narrowed (a type taken from a union, `null` no longer allowed) | no |
//! | an enum value added / removed | yes / no |
//! | R closed where W was open | no |
//!
//! BACKWARD (the default) checks the new schema as reader of the last one's data; FORWARD the
//! last one as reader of the new one's; FULL both; the `_TRANSITIVE` levels check against every
//! version, not only the last; NONE checks nothing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A subject's compatibility level (Confluent's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub fn parse(name: &str) -> Option<Level> {
        serde_json::from_value(Value::String(name.to_ascii_uppercase())).ok()
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }
}

/// Why `new` may not follow `earlier` (oldest first) at `level`: one message per problem, none
/// when it is compatible.
pub fn check(level: Level, new: &Value, earlier: &[&Value]) -> Vec<String> {
    let against: Vec<&Value> = match (level, earlier.last()) {
        (Level::None, _) | (_, None) => return Vec::new(),
        (level, Some(last)) if !level.transitive() => vec![*last],
        _ => earlier.to_vec(),
    };
    let (backward, forward) = match level {
        Level::Backward | Level::BackwardTransitive => (true, false),
        Level::Forward | Level::ForwardTransitive => (false, true),
        _ => (true, true),
    };
    let mut problems = Vec::new();
    for old in against {
        if backward {
            problems.extend(reads(new, old));
        }
        if forward {
            problems.extend(
                reads(old, new)
                    .into_iter()
                    .map(|p| format!("{p} (forward)")),
            );
        }
    }
    problems
}

/// Why a reader with schema `reader` cannot read all data written with `writer`.
pub fn reads(reader: &Value, writer: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let roots = Roots { reader, writer };
    compare(&roots, reader, writer, "#", &mut problems, 0);
    problems
}

/// The two documents, for resolving local `$ref`s.
struct Roots<'a> {
    reader: &'a Value,
    writer: &'a Value,
}

/// `#/$defs/Name` or `#/definitions/Name` within `root`.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut schema = schema;
    for _ in 0..32 {
        let Some(pointer) = schema.get("$ref").and_then(Value::as_str) else {
            return schema;
        };
        match pointer.strip_prefix('#').and_then(|p| root.pointer(p)) {
            Some(target) => schema = target,
            None => return schema,
        }
    }
    schema
}

/// The JSON types a schema admits (`None`: any). `integer` is within `number`.
fn types(schema: &Value) -> Option<Vec<String>> {
    if let Some(branches) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)
    {
        let mut all = Vec::new();
        for branch in branches {
            all.extend(types(branch)?);
        }
        return Some(all);
    }
    match schema.get("type")? {
        Value::String(t) => Some(vec![t.clone()]),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

/// The branch of `schema` (a union or not) that admits `json_type`.
fn branch_for<'a>(root: &'a Value, schema: &'a Value, json_type: &str) -> Option<&'a Value> {
    let schema = resolve(root, schema);
    if let Some(branches) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)
    {
        return branches.iter().find_map(|b| branch_for(root, b, json_type));
    }
    let admits = types(schema).is_none_or(|ts| {
        ts.iter()
            .any(|t| t == json_type || (t == "number" && json_type == "integer"))
    });
    admits.then_some(schema)
}

fn closed(schema: &Value) -> bool {
    schema.get("additionalProperties") == Some(&Value::Bool(false))
}

fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn compare(
    roots: &Roots<'_>,
    reader: &Value,
    writer: &Value,
    path: &str,
    problems: &mut Vec<String>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    let reader = resolve(roots.reader, reader);
    let writer = resolve(roots.writer, writer);
    if compare_types(roots, reader, writer, path, problems, depth) {
        return;
    }
    // Enums: every value the writer may write, the reader must take.
    if let (Some(read), Some(written)) = (
        reader.get("enum").and_then(Value::as_array),
        writer.get("enum").and_then(Value::as_array),
    ) {
        for value in written {
            if !read.contains(value) {
                problems.push(format!("{path}: the value {value} is no longer allowed"));
            }
        }
    }
    // Arrays.
    if let (Some(r), Some(w)) = (reader.get("items"), writer.get("items")) {
        compare(roots, r, w, &format!("{path}/items"), problems, depth + 1);
    }
    compare_objects(roots, reader, writer, path, problems, depth);
}

/// Every type the writer may write, the reader must take; a union's branches are compared
/// each with the reader's branch for its type. True when the union's branches said it all.
fn compare_types(
    roots: &Roots<'_>,
    reader: &Value,
    writer: &Value,
    path: &str,
    problems: &mut Vec<String>,
    depth: usize,
) -> bool {
    let (read, written) = match (types(reader), types(writer)) {
        (Some(_), None) => {
            problems.push(format!("{path}: the type was narrowed from any"));
            return false;
        }
        (Some(read), Some(written)) => (read, written),
        _ => return false,
    };
    for t in &written {
        let taken = read
            .iter()
            .any(|r| r == t || (r == "number" && t == "integer"));
        if !taken {
            problems.push(if read.len() == 1 && written.len() == 1 {
                format!("{path}: the type changed from {t} to {}", read[0])
            } else {
                format!("{path}: {t} is no longer allowed")
            });
        }
    }
    if written.len() <= 1 {
        return false;
    }
    for t in &written {
        if let (Some(r), Some(w)) = (
            branch_for(roots.reader, reader, t),
            branch_for(roots.writer, writer, t),
        ) && (r != reader || w != writer)
        {
            compare(roots, r, w, path, problems, depth + 1);
        }
    }
    true
}

/// Properties, `required` and `additionalProperties` (see the table at the top).
fn compare_objects(
    roots: &Roots<'_>,
    reader: &Value,
    writer: &Value,
    path: &str,
    problems: &mut Vec<String>,
    depth: usize,
) {
    let empty = serde_json::Map::new();
    let read_props = reader
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let written_props = writer
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if read_props.is_empty() && written_props.is_empty() {
        return;
    }
    if closed(reader) && !closed(writer) {
        problems.push(format!(
            "{path}: the reader is closed (additionalProperties: false) where the writer was open"
        ));
    }
    let writer_required = required(writer);
    for name in required(reader) {
        if !writer_required.contains(&name) {
            problems.push(format!(
                "{path}/properties/{name}: required now, and data written before may lack it"
            ));
        }
    }
    for (name, written) in written_props {
        let at = format!("{path}/properties/{name}");
        match read_props.get(name) {
            Some(read) => compare(roots, read, written, &at, problems, depth + 1),
            None if closed(reader) => problems.push(format!(
                "{at}: removed, and the reader is closed (additionalProperties: false)"
            )),
            None => {}
        }
    }
    for name in read_props.keys() {
        if !written_props.contains_key(name) && !closed(writer) {
            problems.push(format!(
                "{path}/properties/{name}: added where the writer was open, so data written \
                 before may hold it with another type"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order(extra: Value) -> Value {
        let mut schema = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["order_id", "total"],
            "properties": {
                "order_id": {"type": "string", "format": "uuid"},
                "total": {"type": "integer"},
                "items": {"type": "array", "items": {"$ref": "#/$defs/LineItem"}}
            },
            "$defs": {"LineItem": {
                "type": "object", "additionalProperties": false, "required": ["sku"],
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}}
            }}
        });
        if let (Some(props), Some(add)) = (
            schema["properties"].as_object_mut(),
            extra.get("properties").and_then(Value::as_object),
        ) {
            props.extend(add.clone());
        }
        if let Some(req) = extra.get("required").and_then(Value::as_array) {
            schema["required"]
                .as_array_mut()
                .unwrap()
                .extend(req.clone());
        }
        schema
    }

    #[test]
    fn an_optional_field_added_to_a_closed_schema_is_backward_compatible() {
        let v1 = order(json!({}));
        let v2 = order(json!({"properties": {"note": {"type": ["string", "null"]}}}));
        assert_eq!(check(Level::Backward, &v2, &[&v1]), Vec::<String>::new());
        // FORWARD: the old reader is closed and the new data may hold "note".
        assert_eq!(check(Level::Forward, &v2, &[&v1]).len(), 1);
        assert_eq!(check(Level::None, &v2, &[&v1]), Vec::<String>::new());
    }

    #[test]
    fn a_required_field_added_a_field_removed_or_retyped_is_refused() {
        let v1 = order(json!({}));
        let required =
            order(json!({"properties": {"note": {"type": "string"}}, "required": ["note"]}));
        assert!(check(Level::Backward, &required, &[&v1])[0].contains("required now"));
        let mut removed = v1.clone();
        removed["properties"]
            .as_object_mut()
            .unwrap()
            .remove("items");
        let problems = check(Level::Backward, &removed, &[&v1]);
        assert!(
            problems[0].contains("#/properties/items: removed"),
            "{problems:?}"
        );
        let mut retyped = v1.clone();
        retyped["properties"]["total"] = json!({"type": "string"});
        let problems = check(Level::Backward, &retyped, &[&v1]);
        assert_eq!(
            problems,
            vec!["#/properties/total: the type changed from integer to string"]
        );
    }

    #[test]
    fn refs_are_followed_and_widening_passes_where_narrowing_fails() {
        let v1 = order(json!({}));
        let mut deep = v1.clone();
        deep["$defs"]["LineItem"]["properties"]["quantity"] = json!({"type": "string"});
        let problems = check(Level::Backward, &deep, &[&v1]);
        assert_eq!(
            problems,
            vec![
                "#/properties/items/items/properties/quantity: the type changed from integer to string"
            ]
        );
        let mut widened = v1.clone();
        widened["properties"]["total"] = json!({"type": ["number", "null"]});
        assert_eq!(
            check(Level::Backward, &widened, &[&v1]),
            Vec::<String>::new()
        );
        // The other way round is a narrowing.
        assert_eq!(check(Level::Backward, &v1, &[&widened]).len(), 2);
    }

    #[test]
    fn transitive_levels_check_every_version_and_enums_may_only_grow() {
        let v1 = json!({"type": "string", "enum": ["PENDING", "PAID"]});
        let v2 = json!({"type": "string", "enum": ["PENDING", "PAID", "CONFIRMED"]});
        let v3 = json!({"type": "string", "enum": ["PAID", "CONFIRMED"]});
        assert_eq!(check(Level::Backward, &v2, &[&v1]), Vec::<String>::new());
        assert_eq!(check(Level::Backward, &v3, &[&v1, &v2]).len(), 1);
        // v3 against v1 alone: PENDING was already there.
        assert_eq!(
            check(Level::BackwardTransitive, &v3, &[&v1, &v2]),
            vec![
                "#: the value \"PENDING\" is no longer allowed",
                "#: the value \"PENDING\" is no longer allowed"
            ]
        );
        assert_eq!(Level::parse("full_transitive"), Some(Level::FullTransitive));
        assert_eq!(Level::parse("sometimes"), None);
    }
}
