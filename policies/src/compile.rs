//! Compile config rules and `.cedar` files into an [`Engine`]: parse, validate against the schema, slice per tool.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Entity, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, ResourceConstraint,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde_json::Value;

use crate::config::{PolicyConfig, PolicyError, PolicyFile, ToolInfo};
use crate::engine::{Engine, PolicyMeta, Slice};
use crate::ids::{self, Types};
use crate::schema::{argument_types, schema_text};
use crate::translate::{check, translate};

/// The file name errors in translated rules carry (lines refer to `translate`'s output).
pub const CONFIG_FILE: &str = "<config>";

/// 1-based line of a byte offset in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |t| t.matches('\n').count() + 1)
}

/// Cedar's message with its help text, and the line its first label points at.
fn describe(d: &(dyn Diagnostic + '_), text: &str) -> (Option<usize>, String) {
    let line = d
        .labels()
        .and_then(|mut l| l.next())
        .map(|l| line_of(text, l.offset()));
    let mut message = d.to_string();
    if let Some(help) = d.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    (line, message)
}

/// Whether a policy's JSON form mentions the `context` variable anywhere.
fn reads_context(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.get("Var").and_then(Value::as_str) == Some("context") || m.values().any(reads_context)
        }
        Value::Array(a) => a.iter().any(reads_context),
        _ => false,
    }
}

/// Whether a policy's resource scope can match a resource of type `ty` with these ancestors (self included).
fn applies(p: &Policy, ty: &EntityTypeName, ancestors: &HashSet<EntityUid>) -> bool {
    match p.resource_constraint() {
        ResourceConstraint::Any => true,
        ResourceConstraint::Eq(u) | ResourceConstraint::In(u) => ancestors.contains(&u),
        ResourceConstraint::Is(t) => &t == ty,
        ResourceConstraint::IsIn(t, u) => &t == ty && ancestors.contains(&u),
    }
}

/// Parse every source, give each policy its `@id` (or `file:n`), refuse templates and duplicate ids.
fn parse(sources: &[(&str, &str)]) -> Result<(PolicySet, HashMap<String, usize>), PolicyError> {
    let mut all = PolicySet::new();
    let mut origin = HashMap::new();
    for (index, (file, text)) in sources.iter().enumerate() {
        let set = PolicySet::from_str(text).map_err(|e| {
            let (line, message) = describe(&e, text);
            PolicyError::new(*file, line, message)
        })?;
        if set.templates().next().is_some() {
            return Err(PolicyError::new(
                *file,
                None,
                "policy templates are not supported",
            ));
        }
        // `from_str` numbers policies policy0, policy1, … in source order.
        let mut policies: Vec<&Policy> = set.policies().collect();
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        for (n, p) in policies.into_iter().enumerate() {
            let id = p
                .annotation("id")
                .map_or_else(|| format!("{file}:{n}"), str::to_owned);
            if origin.insert(id.clone(), index).is_some() {
                return Err(PolicyError::new(
                    *file,
                    None,
                    format!("duplicate policy id {id:?}"),
                ));
            }
            all.add(p.new_id(PolicyId::new(&id)))
                .map_err(|e| PolicyError::new(*file, None, format!("policy {id:?}: {e}")))?;
        }
    }
    Ok((all, origin))
}

fn tool_entities(
    types: &Types,
    tool: &ToolInfo,
) -> Result<(EntityUid, Vec<Entity>, HashSet<EntityUid>), PolicyError> {
    let err = |e: &dyn std::fmt::Display| {
        PolicyError::new("<tools>", None, format!("tool {:?}: {e}", tool.name))
    };
    let uid = ids::uid(&types.tool, &tool.name);
    let upstream = ids::uid(&types.upstream, &tool.upstream);
    let tags: Vec<EntityUid> = tool.tags.iter().map(|t| ids::uid(&types.tag, t)).collect();
    let mut hints = Vec::new();
    for key in [
        "readOnlyHint",
        "destructiveHint",
        "idempotentHint",
        "openWorldHint",
    ] {
        if let Some(b) = tool.annotations.get(key).and_then(Value::as_bool) {
            hints.push((key.to_owned(), RestrictedExpression::new_bool(b)));
        }
    }
    if let Some(t) = tool.annotations.get("title").and_then(Value::as_str) {
        hints.push((
            "title".to_owned(),
            RestrictedExpression::new_string(t.to_owned()),
        ));
    }
    let attrs = HashMap::from([
        (
            "name".to_owned(),
            RestrictedExpression::new_string(tool.name.clone()),
        ),
        (
            "upstream".to_owned(),
            RestrictedExpression::new_string(tool.upstream.clone()),
        ),
        (
            "upstream_name".to_owned(),
            RestrictedExpression::new_string(tool.upstream_name.clone()),
        ),
        (
            "tags".to_owned(),
            RestrictedExpression::new_set(
                tool.tags
                    .iter()
                    .map(|t| RestrictedExpression::new_string(t.clone())),
            ),
        ),
        (
            "annotations".to_owned(),
            RestrictedExpression::new_record(hints).map_err(|e| err(&e))?,
        ),
    ]);
    let mut parents: HashSet<EntityUid> = tags.iter().cloned().collect();
    parents.insert(upstream.clone());
    let mut entities = vec![Entity::new(uid.clone(), attrs, parents.clone()).map_err(|e| err(&e))?];
    entities.push(Entity::with_uid(upstream));
    entities.extend(tags.into_iter().map(Entity::with_uid));
    let mut ancestors = parents;
    ancestors.insert(uid.clone());
    Ok((uid, entities, ancestors))
}

fn slice(
    all: &PolicySet,
    ty: &EntityTypeName,
    uid: EntityUid,
    entities: Vec<Entity>,
    ancestors: &HashSet<EntityUid>,
    ctx: &HashSet<String>,
) -> Result<Slice, PolicyError> {
    let mut policies = PolicySet::new();
    let mut context_sensitive = false;
    for p in all.policies().filter(|p| applies(p, ty, ancestors)) {
        context_sensitive |= ctx.contains(&p.id().to_string());
        policies
            .add(p.clone())
            .map_err(|e| PolicyError::new("<slice>", None, e.to_string()))?;
    }
    Ok(Slice {
        uid,
        entities,
        policies,
        context_sensitive,
    })
}

/// Compile everything (generated + files) and validate it against the schema.
pub fn compile(
    cfg: &PolicyConfig,
    files: &[PolicyFile],
    tools: &[ToolInfo],
    generation: u64,
) -> Result<Engine, PolicyError> {
    compile_catalog(cfg, files, tools, &[], generation)
}

/// [`compile`] for a catalog whose upstreams may serve resources, prompts or completions
/// without listing a tool: each of `item_upstreams` gets an upstream slice too, so its items
/// are decided by policy like any other (a tool's upstream has one already).
pub fn compile_catalog(
    cfg: &PolicyConfig,
    files: &[PolicyFile],
    tools: &[ToolInfo],
    item_upstreams: &[String],
    generation: u64,
) -> Result<Engine, PolicyError> {
    check(cfg)?;
    let types = Types::new()?;
    let arg_types = argument_types(tools);
    let schema_src = schema_text(&arg_types);
    let (schema, _warnings) = Schema::from_cedarschema_str(&schema_src).map_err(|e| {
        let (line, message) = describe(&e, &schema_src);
        PolicyError::new("<schema>", line, message)
    })?;

    let generated = translate(cfg);
    let mut sources: Vec<(&str, &str)> = vec![(CONFIG_FILE, generated.as_str())];
    sources.extend(files.iter().map(|f| (f.name.as_str(), f.text.as_str())));
    let (all, origin) = parse(&sources)?;

    let result = Validator::new(schema).validate(&all, ValidationMode::Strict);
    if let Some(e) = result.validation_errors().next() {
        let id = e.policy_id().to_string();
        let (file, text) = origin
            .get(&id)
            .and_then(|i| sources.get(*i))
            .copied()
            .unwrap_or(("<unknown>", ""));
        let (line, message) = describe(e, text);
        return Err(PolicyError::new(
            file,
            line,
            format!("policy {id:?}: {message}"),
        ));
    }

    let mut meta = HashMap::new();
    let mut context_readers = HashSet::new();
    for p in all.policies() {
        let id = p.id().to_string();
        if p.to_json().is_ok_and(|j| reads_context(&j)) {
            context_readers.insert(id.clone());
        }
        let step_up = p
            .annotation("step_up")
            .map(|s| s.split_whitespace().map(str::to_owned).collect());
        meta.insert(
            id,
            PolicyMeta {
                reason: p.annotation("reason").map(str::to_owned),
                step_up,
            },
        );
    }

    let mut tool_slices = HashMap::with_capacity(tools.len());
    let mut upstreams: HashSet<&str> = HashSet::new();
    for tool in tools {
        let (uid, entities, ancestors) = tool_entities(&types, tool)?;
        let s = slice(
            &all,
            &types.tool,
            uid,
            entities,
            &ancestors,
            &context_readers,
        )?;
        if tool_slices.insert(tool.name.clone(), s).is_some() {
            return Err(PolicyError::new(
                "<tools>",
                None,
                format!("duplicate tool name {:?}", tool.name),
            ));
        }
        upstreams.insert(&tool.upstream);
    }
    upstreams.extend(item_upstreams.iter().map(String::as_str));
    let mut upstream_slices = HashMap::with_capacity(upstreams.len());
    for u in upstreams {
        let uid = ids::uid(&types.upstream, u);
        let ancestors = HashSet::from([uid.clone()]);
        let s = slice(
            &all,
            &types.upstream,
            uid.clone(),
            vec![Entity::with_uid(uid)],
            &ancestors,
            &context_readers,
        )?;
        upstream_slices.insert(u.to_owned(), s);
    }

    let action = |name: &str| ids::uid(&types.action, name);
    Ok(Engine {
        generation,
        tools: tool_slices,
        upstreams: upstream_slices,
        all,
        meta,
        arg_types,
        actions: [
            action("tools/call"),
            action("resources/read"),
            action("prompts/get"),
            action("completion/complete"),
        ],
        types,
        authorizer: Authorizer::new(),
    })
}
