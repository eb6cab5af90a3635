//! Turns a resolved OpenAPI 3.0/3.1 schema into the JSON Schema an MCP client reads.

use serde_json::{Map, Value};

/// Converts one resolved schema: 3.0 `nullable` and boolean exclusive bounds become their
/// 3.1 (JSON Schema 2020-12) forms, presentation-only keys (`xml`, `example`, `x-*`, …) are
/// dropped, and an `allOf` of plain objects is flattened so models see one property list.
pub(crate) fn convert(schema: &Value) -> Value {
    let Some(obj) = schema.as_object() else {
        // `true`/`false` schemas (3.1) and anything malformed pass through unchanged.
        return schema.clone();
    };
    let mut out = Map::new();
    for (k, v) in obj {
        let converted = match k.as_str() {
            "properties" | "patternProperties" | "$defs" | "dependentSchemas" => match v {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(name, s)| (name.clone(), convert(s)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "additionalProperties" | "not" | "contains" | "propertyNames" => convert(v),
            "allOf" | "anyOf" | "oneOf" | "prefixItems" => match v {
                Value::Array(parts) => Value::Array(parts.iter().map(convert).collect()),
                other => other.clone(),
            },
            "xml" | "example" | "examples" | "externalDocs" | "discriminator" | "nullable"
            | "summary" => continue,
            "exclusiveMinimum" | "exclusiveMaximum" if v.is_boolean() => continue,
            k if k.starts_with("x-") => continue,
            _ => v.clone(),
        };
        out.insert(k.clone(), converted);
    }
    // OpenAPI 3.0: `exclusiveMinimum: true` qualifies `minimum`.
    for (flag, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if obj.get(flag) == Some(&Value::Bool(true))
            && let Some(b) = out.remove(bound)
        {
            out.insert(flag.into(), b);
        }
    }
    if obj.get("nullable") == Some(&Value::Bool(true)) {
        add_null(&mut out);
    }
    if let Some(merged) = merge_all_of(&out) {
        return Value::Object(merged);
    }
    Value::Object(out)
}

/// OpenAPI 3.0 `nullable: true` is `type: [T, "null"]` in 3.1.
fn add_null(out: &mut Map<String, Value>) {
    let null = Value::String("null".into());
    match out.get_mut("type") {
        Some(Value::String(t)) => {
            let t = Value::String(std::mem::take(t));
            out.insert("type".into(), Value::Array(vec![t, null.clone()]));
        }
        Some(Value::Array(types)) if !types.contains(&null) => types.push(null.clone()),
        _ => {}
    }
    if let Some(Value::Array(values)) = out.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
}

/// Keys an `allOf` part may have and still be merged without changing its meaning.
const MERGEABLE: &[&str] = &["type", "properties", "required", "description", "title"];

/// Flattens `allOf: [A, B]` of plain object schemas into one object schema. Anything
/// subtler (shared property names, `additionalProperties`, non-object parts) is kept as
/// `allOf`, which the validator checks part by part.
fn merge_all_of(out: &Map<String, Value>) -> Option<Map<String, Value>> {
    let parts = out.get("allOf")?.as_array()?;
    let mut merged = Map::new();
    let mut properties = Map::new();
    let mut required: Vec<Value> = Vec::new();
    let outer = out.iter().filter(|(k, _)| k.as_str() != "allOf");
    let outer_part: Map<String, Value> = outer.map(|(k, v)| (k.clone(), v.clone())).collect();
    for part in parts
        .iter()
        .chain(std::iter::once(&Value::Object(outer_part)))
    {
        let part = part.as_object()?;
        if part.keys().any(|k| !MERGEABLE.contains(&k.as_str())) {
            return None;
        }
        match part.get("type") {
            None => {}
            Some(Value::String(t)) if t == "object" => {}
            Some(_) => return None,
        }
        if let Some(props) = part.get("properties") {
            for (name, schema) in props.as_object()? {
                if properties.insert(name.clone(), schema.clone()).is_some() {
                    return None;
                }
            }
        }
        for r in part
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !required.contains(r) {
                required.push(r.clone());
            }
        }
        for key in ["description", "title"] {
            if let Some(v) = part.get(key) {
                merged.insert(key.into(), v.clone());
            }
        }
    }
    merged.insert("type".into(), Value::String("object".into()));
    merged.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        merged.insert("required".into(), Value::Array(required));
    }
    Some(merged)
}
