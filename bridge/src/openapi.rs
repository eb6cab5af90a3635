//! Reads OpenAPI text (JSON or YAML) and inlines local `$ref`s within cycle, depth and size bounds.

use serde_json::{Map, Value};

use crate::BridgeError;

/// Largest spec text accepted. Real specs are well under a megabyte.
pub const MAX_SPEC_BYTES: usize = 16 << 20;
/// Most `$ref`s followed inside one another before giving up.
pub const MAX_REF_DEPTH: usize = 32;
/// Deepest nesting of a resolved value: keeps every recursive walk far from the stack limit.
pub const MAX_NESTING: usize = 128;
/// Most JSON nodes one operation may expand to: stops `$ref` fan-out bombs.
pub const MAX_RESOLVED_NODES: usize = 50_000;

/// Parses JSON (text starting with `{`) or YAML into a JSON value.
pub(crate) fn parse(text: &str) -> Result<Value, BridgeError> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(BridgeError::TooLarge {
            size: text.len(),
            limit: MAX_SPEC_BYTES,
        });
    }
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| BridgeError::Parse(format!("JSON: {e}")));
    }
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| BridgeError::Parse(format!("YAML: {e}")))?;
    yaml_to_json(yaml, 0)
}

/// YAML maps may have non-string keys (`200:` for a response code); JSON needs strings.
fn yaml_to_json(v: serde_yaml_ng::Value, depth: usize) -> Result<Value, BridgeError> {
    use serde_yaml_ng::Value as Y;
    if depth > MAX_NESTING {
        return Err(BridgeError::Parse(format!(
            "YAML nested deeper than {MAX_NESTING} levels"
        )));
    }
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(|i| yaml_to_json(i, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    Y::Null => "null".to_owned(),
                    _ => return Err(BridgeError::Parse("YAML map key is not a scalar".into())),
                };
                out.insert(key, yaml_to_json(v, depth + 1)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value, depth)?,
    })
}

/// Escapes one JSON pointer token (`/pet/{id}` → `~1pet~1{id}`).
pub(crate) fn escape_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Inlines `$ref`s found under one operation. A reference back into a schema that is
/// already being expanded is cut: it becomes `{}` with a note, because recursive
/// schemas (trees, linked lists) are legitimate and cannot be inlined.
pub(crate) struct Resolver<'a> {
    root: &'a Value,
    nodes: usize,
    stack: Vec<String>,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(root: &'a Value) -> Self {
        Self {
            root,
            nodes: 0,
            stack: Vec::new(),
        }
    }

    /// Returns `value` (found at `at`) with every local `$ref` inside it inlined.
    pub(crate) fn resolve(&mut self, value: &Value, at: &str) -> Result<Value, BridgeError> {
        self.walk(value, at, 0)
    }

    fn walk(&mut self, value: &Value, at: &str, depth: usize) -> Result<Value, BridgeError> {
        self.nodes += 1;
        if self.nodes > MAX_RESOLVED_NODES {
            return Err(invalid(
                at,
                format!("expands to more than {MAX_RESOLVED_NODES} nodes after resolving $refs"),
            ));
        }
        if depth > MAX_NESTING {
            return Err(invalid(
                at,
                format!("nested deeper than {MAX_NESTING} levels after resolving $refs"),
            ));
        }
        match value {
            Value::Object(obj) => {
                if let Some(r) = obj.get("$ref") {
                    return self.follow(obj, r, at, depth);
                }
                let mut out = Map::new();
                for (k, v) in obj {
                    // Examples, defaults and extensions are literal data, never resolved.
                    let literal = matches!(k.as_str(), "example" | "examples" | "default")
                        || k.starts_with("x-");
                    let v = if literal {
                        v.clone()
                    } else {
                        self.walk(v, &format!("{at}/{}", escape_token(k)), depth + 1)?
                    };
                    out.insert(k.clone(), v);
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| self.walk(v, &format!("{at}/{i}"), depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Ok(other.clone()),
        }
    }

    fn follow(
        &mut self,
        obj: &Map<String, Value>,
        r: &Value,
        at: &str,
        depth: usize,
    ) -> Result<Value, BridgeError> {
        let at_ref = format!("{at}/$ref");
        let Some(r) = r.as_str() else {
            return Err(invalid(&at_ref, "$ref is not a string".into()));
        };
        let Some(fragment) = r.strip_prefix('#') else {
            return Err(invalid(
                &at_ref,
                format!("external $ref {r:?} is not supported (only local #/... references)"),
            ));
        };
        if self.stack.iter().any(|s| s == r) {
            let mut cut = Map::new();
            cut.insert(
                "description".into(),
                Value::String(format!("(recursive reference to {r}, not expanded)")),
            );
            return Ok(Value::Object(cut));
        }
        if self.stack.len() >= MAX_REF_DEPTH {
            return Err(invalid(
                &at_ref,
                format!("more than {MAX_REF_DEPTH} nested $refs"),
            ));
        }
        let pointer = percent_encoding::percent_decode_str(fragment)
            .decode_utf8()
            .map_err(|_| invalid(&at_ref, format!("$ref {r:?} is not valid UTF-8")))?;
        let root = self.root;
        let Some(target) = root.pointer(&pointer) else {
            return Err(invalid(&at_ref, format!("$ref {r:?} points at nothing")));
        };
        self.stack.push(r.to_owned());
        let resolved = self.walk(target, r, depth + 1);
        self.stack.pop();
        let mut resolved = resolved?;
        // OpenAPI 3.1 lets a reference override the target's summary and description.
        if let Value::Object(out) = &mut resolved {
            for key in ["description", "summary"] {
                if let Some(v) = obj.get(key) {
                    out.insert(key.into(), v.clone());
                }
            }
        }
        Ok(resolved)
    }
}

pub(crate) fn invalid(pointer: &str, reason: String) -> BridgeError {
    BridgeError::Invalid {
        pointer: pointer.to_owned(),
        reason,
    }
}
