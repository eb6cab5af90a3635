//! The Cedar schema: the static `schema.cedarschema` plus an `Arguments` type generated from the tools' input schemas.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cedar_policy::RestrictedExpression;
use serde_json::Value;

use crate::config::ToolInfo;
use crate::translate::cedar_str;

/// The static part of the schema (entity types, actions, context).
pub const BASE_SCHEMA: &str = include_str!("../schema.cedarschema");

/// The Cedar type of one argument, from its JSON Schema `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgType {
    String,
    Long,
    Bool,
    StringSet,
}

impl ArgType {
    fn from_json_schema(prop: &Value) -> Option<Self> {
        match prop.get("type").and_then(Value::as_str)? {
            "string" => Some(Self::String),
            "integer" => Some(Self::Long),
            "boolean" => Some(Self::Bool),
            "array" => match prop.pointer("/items/type").and_then(Value::as_str) {
                Some("string") => Some(Self::StringSet),
                _ => None,
            },
            _ => None,
        }
    }

    fn cedar(self) -> &'static str {
        match self {
            Self::String => "String",
            Self::Long => "Long",
            Self::Bool => "Bool",
            Self::StringSet => "Set<String>",
        }
    }

    /// The Cedar value of a JSON argument, or `None` if it does not have this type.
    pub(crate) fn value(self, v: &Value) -> Option<RestrictedExpression> {
        match (self, v) {
            (Self::String, Value::String(s)) => Some(RestrictedExpression::new_string(s.clone())),
            (Self::Long, Value::Number(n)) => n.as_i64().map(RestrictedExpression::new_long),
            (Self::Bool, Value::Bool(b)) => Some(RestrictedExpression::new_bool(*b)),
            (Self::StringSet, Value::Array(items)) => {
                let strings: Option<Vec<RestrictedExpression>> = items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(|s| RestrictedExpression::new_string(s.to_owned()))
                    })
                    .collect();
                strings.map(RestrictedExpression::new_set)
            }
            _ => None,
        }
    }
}

/// Argument name → type, over all tools. A name two tools type differently is left out
/// (policies cannot read it), since Cedar has one context type per action, not per tool.
pub(crate) fn argument_types(tools: &[ToolInfo]) -> BTreeMap<String, ArgType> {
    let mut types: BTreeMap<String, Option<ArgType>> = BTreeMap::new();
    for tool in tools {
        let Some(props) = tool
            .input_schema
            .get("properties")
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (name, prop) in props {
            let t = ArgType::from_json_schema(prop);
            types
                .entry(name.clone())
                .and_modify(|prev| {
                    if *prev != t {
                        *prev = None;
                    }
                })
                .or_insert(t);
        }
    }
    types
        .into_iter()
        .filter_map(|(k, v)| v.map(|t| (k, t)))
        .collect()
}

/// The full schema text: the base plus `type Arguments = { ... };`.
pub(crate) fn schema_text(args: &BTreeMap<String, ArgType>) -> String {
    let mut out = String::from(BASE_SCHEMA);
    out.push_str("\n// Generated from the tools' input schemas: every argument is optional (test with `has`).\n");
    out.push_str("type Arguments = {\n");
    for (name, t) in args {
        let _ = writeln!(out, "  {}?: {},", cedar_str(name), t.cedar());
    }
    out.push_str("};\n");
    out
}
