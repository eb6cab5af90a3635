//! `x-mcp-header` annotations of a discovered tool (2026-07-28, "Custom Headers from Tool
//! Parameters"): which arguments a client mirrors into `Mcp-Param-*` headers, validated as
//! the revision requires of a client — an invalid annotation makes the whole tool invalid,
//! and the catalog refuses it rather than serve a tool no conforming client may call.

use std::collections::HashSet;

use dataplane::snapshot::ParamHeader;
use serde_json::Value;

const KEY: &str = "x-mcp-header";

/// The tool's mirrored parameters, or why its annotations are invalid.
pub fn param_headers(tool: &Value) -> Result<Vec<ParamHeader>, String> {
    let Some(schema) = tool.get("inputSchema") else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    walk(schema, &mut Vec::new(), &mut found)?;
    // Every annotation must sit on a property reached through `properties` keys alone.
    let everywhere = count_key(schema);
    if everywhere != found.len() {
        return Err(format!(
            "{KEY} is only allowed on properties reached through `properties` keys"
        ));
    }
    let mut seen = HashSet::new();
    for p in &found {
        if !seen.insert(p.lower.clone()) {
            return Err(format!("{KEY} value {:?} is not unique", p.name));
        }
    }
    Ok(found)
}

/// Annotations on the `properties` chain below `schema`.
fn walk(schema: &Value, path: &mut Vec<String>, out: &mut Vec<ParamHeader>) -> Result<(), String> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (key, prop) in props {
        path.push(key.clone());
        if let Some(h) = prop.get(KEY) {
            let name = h
                .as_str()
                .filter(|n| is_token(n))
                .ok_or_else(|| format!("{KEY} of {key:?} must be a non-empty HTTP token"))?;
            match prop.get("type").and_then(Value::as_str) {
                Some("string" | "integer" | "boolean") => {}
                _ => {
                    return Err(format!(
                        "{KEY} of {key:?} must annotate a string, integer or boolean"
                    ));
                }
            }
            out.push(ParamHeader {
                name: name.to_owned(),
                lower: name.to_ascii_lowercase(),
                path: path.clone(),
            });
        }
        walk(prop, path, out)?;
        path.pop();
    }
    Ok(())
}

/// How many `x-mcp-header` keys the schema holds anywhere.
fn count_key(v: &Value) -> usize {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| usize::from(k == KEY) + count_key(v))
            .sum(),
        Value::Array(a) => a.iter().map(count_key).sum(),
        _ => 0,
    }
}

/// RFC 9110 §5.1 `token` (`1*tchar`).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(schema: Value) -> Value {
        json!({"name": "t", "inputSchema": schema})
    }

    #[test]
    fn nested_properties_are_found_with_their_paths() {
        let t = tool(json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "opts": {"type": "object", "properties": {"n": {"type": "integer", "x-mcp-header": "N"}}},
            "q": {"type": "string"}
        }}));
        let h = param_headers(&t).unwrap();
        assert_eq!(h.len(), 2);
        let n = h.iter().find(|p| p.name == "N").unwrap();
        assert_eq!(n.path, vec!["opts".to_owned(), "n".to_owned()]);
        assert_eq!(n.lower, "n");
    }

    #[test]
    fn invalid_annotations_make_the_tool_invalid() {
        for schema in [
            // Not a token.
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A B"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": ""}}}),
            // `number` is not permitted; objects neither.
            json!({"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": "object", "x-mcp-header": "A"}}}),
            // Case-insensitively repeated.
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "X"}, "b": {"type": "string", "x-mcp-header": "x"}}}),
            // Under `items` or a composition keyword.
            json!({"properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}}),
            json!({"anyOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}),
        ] {
            assert!(param_headers(&tool(schema.clone())).is_err(), "{schema}");
        }
        assert_eq!(param_headers(&json!({"name": "t"})).unwrap(), Vec::new());
    }
}
