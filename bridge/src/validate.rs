//! A focused JSON Schema validator for the keywords OpenAPI parameter and body schemas use.
//!
//! Checked: `type` (string or list), `enum`, `const`, `properties`, `required`,
//! `additionalProperties`, `items`, `prefixItems`, `minItems`/`maxItems`/`uniqueItems`,
//! `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`/`multipleOf`,
//! `minLength`/`maxLength`, `pattern`, `minProperties`/`maxProperties`, `allOf`/`anyOf`/
//! `oneOf`/`not`. Not checked: `format` (the upstream validates it), `$dynamicRef`,
//! `dependentSchemas`, `if`/`then`/`else`, `unevaluated*`, and `pattern`s the `regex`
//! crate cannot compile (look-around, backreferences), which load() lists as warnings.

use std::collections::HashMap;

use regex::Regex;
use serde_json::Value;

use crate::openapi::MAX_NESTING;

/// Compiled `pattern`s of every tool, keyed by their source.
pub(crate) type Patterns = HashMap<String, Regex>;

/// Compiles every `pattern` in `schema`; the ones that do not compile are reported.
pub(crate) fn collect_patterns(schema: &Value, out: &mut Patterns, failed: &mut Vec<String>) {
    match schema {
        Value::Object(obj) => {
            for (k, v) in obj {
                if matches!(k.as_str(), "enum" | "const" | "default") {
                    continue;
                }
                if k == "pattern"
                    && let Value::String(p) = v
                {
                    if out.contains_key(p) || failed.contains(p) {
                        continue;
                    }
                    match regex::RegexBuilder::new(p).size_limit(1 << 20).build() {
                        Ok(re) => {
                            out.insert(p.clone(), re);
                        }
                        Err(_) => failed.push(p.clone()),
                    }
                } else {
                    collect_patterns(v, out, failed);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_patterns(i, out, failed)),
        _ => {}
    }
}

/// Checks `value` against `schema`; the error names the offending argument path.
pub(crate) fn validate(schema: &Value, value: &Value, patterns: &Patterns) -> Result<(), String> {
    let mut path = String::new();
    check(schema, value, &mut path, patterns, 0).map_err(|(path, msg)| {
        if path.is_empty() {
            format!("arguments: {msg}")
        } else {
            format!("`{path}`: {msg}")
        }
    })
}

type Failure = (String, String);

fn fail(path: &str, msg: impl Into<String>) -> Result<(), Failure> {
    Err((path.to_owned(), msg.into()))
}

fn check(
    schema: &Value,
    v: &Value,
    path: &mut String,
    patterns: &Patterns,
    depth: usize,
) -> Result<(), Failure> {
    if depth > MAX_NESTING {
        return fail(path, "nested too deeply");
    }
    let s = match schema {
        Value::Object(s) => s,
        Value::Bool(false) => return fail(path, "is not allowed"),
        _ => return Ok(()),
    };
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| has_type(v, t)) {
            return fail(
                path,
                format!("expected {}, got {}", types.join(" or "), describe(v)),
            );
        }
    }
    if let Some(Value::Array(allowed)) = s.get("enum")
        && !allowed.iter().any(|a| same(a, v))
    {
        return fail(
            path,
            format!("must be one of {}", Value::Array(allowed.clone())),
        );
    }
    if let Some(c) = s.get("const")
        && !same(c, v)
    {
        return fail(path, format!("must be {c}"));
    }
    match v {
        Value::Number(n) => check_number(s, n.as_f64().unwrap_or(f64::NAN), path)?,
        Value::String(text) => check_string(s, text, path, patterns)?,
        Value::Array(items) => check_array(s, items, path, patterns, depth)?,
        Value::Object(obj) => check_object(s, obj, path, patterns, depth)?,
        _ => {}
    }
    check_combinators(s, v, path, patterns, depth)
}

fn check_number(s: &serde_json::Map<String, Value>, n: f64, path: &str) -> Result<(), Failure> {
    let bound = |k: &str| s.get(k).and_then(Value::as_f64);
    if let Some(m) = bound("minimum")
        && n < m
    {
        return fail(path, format!("must be at least {m}"));
    }
    if let Some(m) = bound("maximum")
        && n > m
    {
        return fail(path, format!("must be at most {m}"));
    }
    if let Some(m) = bound("exclusiveMinimum")
        && n <= m
    {
        return fail(path, format!("must be greater than {m}"));
    }
    if let Some(m) = bound("exclusiveMaximum")
        && n >= m
    {
        return fail(path, format!("must be less than {m}"));
    }
    if let Some(m) = bound("multipleOf")
        && m > 0.0
        && ((n / m) - (n / m).round()).abs() > 1e-9
    {
        return fail(path, format!("must be a multiple of {m}"));
    }
    Ok(())
}

fn check_string(
    s: &serde_json::Map<String, Value>,
    text: &str,
    path: &str,
    patterns: &Patterns,
) -> Result<(), Failure> {
    let len = text.chars().count() as u64;
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        return fail(path, format!("must be at least {min} characters long"));
    }
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        return fail(path, format!("must be at most {max} characters long"));
    }
    if let Some(Value::String(p)) = s.get("pattern")
        && let Some(re) = patterns.get(p)
        && !re.is_match(text)
    {
        return fail(path, format!("must match the pattern {p:?}"));
    }
    Ok(())
}

fn check_array(
    s: &serde_json::Map<String, Value>,
    items: &[Value],
    path: &mut String,
    patterns: &Patterns,
    depth: usize,
) -> Result<(), Failure> {
    let len = items.len() as u64;
    if let Some(min) = s.get("minItems").and_then(Value::as_u64)
        && len < min
    {
        return fail(path, format!("must have at least {min} items"));
    }
    if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
        && len > max
    {
        return fail(path, format!("must have at most {max} items"));
    }
    if s.get("uniqueItems") == Some(&Value::Bool(true)) {
        for (i, a) in items.iter().enumerate() {
            if items[..i].iter().any(|b| same(a, b)) {
                return fail(path, "items must be unique");
            }
        }
    }
    let prefix = s.get("prefixItems").and_then(Value::as_array);
    let prefix_len = prefix.map_or(0, Vec::len);
    for (i, item) in items.iter().enumerate() {
        let schema = match prefix.and_then(|p| p.get(i)) {
            Some(p) => p,
            None if i >= prefix_len => match s.get("items") {
                Some(it) => it,
                None => continue,
            },
            None => continue,
        };
        let len = path.len();
        path.push_str(&format!("[{i}]"));
        check(schema, item, path, patterns, depth + 1)?;
        path.truncate(len);
    }
    Ok(())
}

fn check_object(
    s: &serde_json::Map<String, Value>,
    obj: &serde_json::Map<String, Value>,
    path: &mut String,
    patterns: &Patterns,
    depth: usize,
) -> Result<(), Failure> {
    let props = s.get("properties").and_then(Value::as_object);
    for name in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = name.as_str()
            && !obj.contains_key(name)
        {
            return fail(&join(path, name), "is required");
        }
    }
    let count = obj.len() as u64;
    if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
        && count < min
    {
        return fail(path, format!("must have at least {min} properties"));
    }
    if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
        && count > max
    {
        return fail(path, format!("must have at most {max} properties"));
    }
    for (name, value) in obj {
        let schema = match props.and_then(|p| p.get(name)) {
            Some(schema) => schema,
            None => match s.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    let known: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    return fail(
                        &join(path, name),
                        format!("is not a known property (known: {})", known.join(", ")),
                    );
                }
                Some(schema) => schema,
                None => continue,
            },
        };
        let len = path.len();
        *path = join(path, name);
        check(schema, value, path, patterns, depth + 1)?;
        path.truncate(len);
    }
    Ok(())
}

fn check_combinators(
    s: &serde_json::Map<String, Value>,
    v: &Value,
    path: &mut String,
    patterns: &Patterns,
    depth: usize,
) -> Result<(), Failure> {
    for part in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(part, v, path, patterns, depth + 1)?;
    }
    if let Some(parts) = s.get("anyOf").and_then(Value::as_array) {
        let mut first = None;
        for part in parts {
            match check(part, v, &mut path.clone(), patterns, depth + 1) {
                Ok(()) => {
                    first = None;
                    break;
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        if let Some((p, msg)) = first {
            return fail(path, format!("matches none of anyOf (first: {p}: {msg})"));
        }
    }
    if let Some(parts) = s.get("oneOf").and_then(Value::as_array) {
        let matched = parts
            .iter()
            .filter(|part| check(part, v, &mut path.clone(), patterns, depth + 1).is_ok())
            .count();
        if matched != 1 {
            return fail(
                path,
                format!("must match exactly one of oneOf, matched {matched}"),
            );
        }
    }
    if let Some(not) = s.get("not")
        && check(not, v, &mut path.clone(), patterns, depth + 1).is_ok()
    {
        return fail(path, "matches a schema it must not match");
    }
    Ok(())
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        "integer" => {
            v.is_i64()
                || v.is_u64()
                || v.as_f64()
                    .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
        }
        _ => true,
    }
}

/// JSON equality where `1` and `1.0` are the same number, as JSON Schema requires.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            format!("string {short:?}")
        }
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}
