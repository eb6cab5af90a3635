//! Rego → Cedar for the seed's documented policy shape; anything else is refused, naming the construct and line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::translate::cedar_str;

/// One parsed `result[...] := value if { ... }` rule.
struct Rule {
    line: usize,
    key: String,
    value: String,
    tool: String,
    scope: String,
    negated: bool,
}

fn unsupported(what: &str, line: usize) -> String {
    format!("unsupported Rego construct: {what} at line {line}")
}

/// `"text"` → `text` (Rego strings in the seed use no escapes other than `\"` and `\\`).
fn string_lit(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                c @ ('"' | '\\') => out.push(c),
                _ => return None,
            },
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The seed's `jwt_payload` helper, accepted line by line (it only decodes the bearer token,
/// which Warden has already validated: policies read the validated claims instead).
const JWT_HELPER: [&str; 4] = [
    "auth_header := input.request.http.headers.Authorization",
    "startswith(auth_header, \"Bearer \")",
    "token := substring(auth_header, 7, -1)",
    "[_, payload, _] := io.jwt.decode(token)",
];

fn construct_of(line: &str) -> &'static str {
    let first = line.split_whitespace().next().unwrap_or("");
    match first {
        "some" => "`some` iteration",
        "every" => "`every` quantifier",
        "import" => "`import`",
        "else" => "`else` branch",
        _ if line.contains(" with ") => "`with` modifier",
        _ if line.contains(" in ") => "`in` membership",
        _ if line.contains('(') && line.contains(":=") => "function definition",
        _ => "statement",
    }
}

/// Parse a rule body: exactly a tool-name test and a scope test.
fn body(lines: &[(usize, &str)], head_line: usize) -> Result<(String, String, bool), String> {
    let (mut tool, mut scope) = (None, None);
    for &(n, l) in lines {
        if let Some(rest) = l.strip_prefix("input.request.mcp.tool.params.name == ") {
            tool = Some(
                string_lit(rest.trim()).ok_or_else(|| unsupported("non-literal tool name", n))?,
            );
        } else if let Some(args) = l
            .strip_prefix("not contains(jwt_payload.scope, ")
            .and_then(|r| r.strip_suffix(')'))
        {
            scope = Some((
                string_lit(args.trim()).ok_or_else(|| unsupported("non-literal scope", n))?,
                true,
            ));
        } else if let Some(args) = l
            .strip_prefix("contains(jwt_payload.scope, ")
            .and_then(|r| r.strip_suffix(')'))
        {
            scope = Some((
                string_lit(args.trim()).ok_or_else(|| unsupported("non-literal scope", n))?,
                false,
            ));
        } else {
            return Err(unsupported(&format!("condition `{l}`"), n));
        }
    }
    match (tool, scope) {
        (Some(t), Some((s, neg))) => Ok((t, s, neg)),
        _ => Err(unsupported(
            "rule without both a tool-name test and a scope test",
            head_line,
        )),
    }
}

/// Translate Rego of the seed's documented shape into Cedar; refuse anything else naming the construct.
pub fn import_rego(text: &str) -> Result<String, String> {
    // Strip comments and blank lines, keeping 1-based line numbers.
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split_once('#').map_or(l, |(code, _)| code).trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let mut default_allow = None;
    let mut rules = Vec::new();
    let mut i = 0;
    while let Some(&(n, l)) = lines.get(i) {
        i += 1;
        if l.starts_with("package ") {
            continue;
        }
        if let Some(v) = l.strip_prefix("default result[\"allowed\"] := ") {
            default_allow = Some(match v {
                "true" => true,
                "false" => false,
                _ => return Err(unsupported("non-boolean default", n)),
            });
            continue;
        }
        let Some(head) = l.strip_suffix('{').map(str::trim) else {
            return Err(unsupported(construct_of(l), n));
        };
        // Collect the block's lines up to the closing brace; nested blocks are not part of the shape.
        let mut block = Vec::new();
        loop {
            let Some(&(bn, bl)) = lines.get(i) else {
                return Err(unsupported("unterminated block", n));
            };
            i += 1;
            if bl == "}" {
                break;
            }
            if bl.ends_with('{') {
                return Err(unsupported("nested block", bn));
            }
            if let Some(what) = ["some ", "every ", "else"]
                .iter()
                .find(|k| bl.starts_with(*k))
            {
                return Err(unsupported(construct_of(what), bn));
            }
            block.push((bn, bl));
        }
        if head == "jwt_payload := payload if" {
            let texts: Vec<&str> = block.iter().map(|(_, t)| *t).collect();
            if texts != JWT_HELPER {
                return Err(unsupported(
                    "`jwt_payload` helper that differs from the seed's",
                    n,
                ));
            }
            continue;
        }
        let Some(rest) = head
            .strip_prefix("result[\"")
            .and_then(|r| r.strip_suffix(" if"))
        else {
            return Err(unsupported(&format!("rule head `{head}`"), n));
        };
        let Some((key, value)) = rest.split_once("\"] := ") else {
            return Err(unsupported(&format!("rule head `{head}`"), n));
        };
        let (tool, scope, negated) = body(&block, n)?;
        rules.push(Rule {
            line: n,
            key: key.to_owned(),
            value: value.trim().to_owned(),
            tool,
            scope,
            negated,
        });
    }
    let default_allow = default_allow
        .ok_or_else(|| "unsupported Rego: no `default result[\"allowed\"]` line".to_owned())?;
    emit(default_allow, &rules)
}

fn emit(default_allow: bool, rules: &[Rule]) -> Result<String, String> {
    // external_message rules, by the condition they share with an allowed rule.
    let mut messages: BTreeMap<(&str, &str, bool), String> = BTreeMap::new();
    for r in rules.iter().filter(|r| r.key == "external_message") {
        let msg = string_lit(&r.value)
            .ok_or_else(|| unsupported("non-literal external_message", r.line))?;
        messages.insert((&r.tool, &r.scope, r.negated), msg);
    }
    let mut out = String::from("// Imported from Rego by `warden policy import-rego`.\n");
    out.push_str("// The seed tests scopes with `contains(jwt_payload.scope, \"…\")`, a SUBSTRING test on the\n");
    out.push_str("// space-separated scope string (`pii:readonly` would pass for `pii:read`). Warden uses exact\n");
    out.push_str("// scope membership instead: `principal.scopes.contains(\"pii:read\")`.\n");
    out.push_str("// Tools are matched on the upstream's own tool name (`resource.upstream_name`), as the seed\n");
    out.push_str("// did; to confine a rule to one upstream, add `resource in Upstream::\"…\"` to its scope.\n\n");
    if default_allow {
        out.push_str("// default result[\"allowed\"] := true\n@id(\"rego:default-allow\")\n");
        out.push_str("permit (principal, action in [Action::\"tools/call\", Action::\"resources/read\", Action::\"prompts/get\", Action::\"completion/complete\"], resource);\n\n");
    } else {
        out.push_str("// default result[\"allowed\"] := false: nothing is allowed unless a permit below applies.\n\n");
    }
    for r in rules {
        let cond = format!("principal.scopes.contains({})", cedar_str(&r.scope));
        let tool_test = format!("resource.upstream_name == {}", cedar_str(&r.tool));
        let id = format!("rego:{}:line-{}", r.tool, r.line);
        match (r.key.as_str(), r.value.as_str(), r.negated) {
            ("external_message", _, _) => continue,
            ("allowed", "false", true) => {
                let _ = writeln!(
                    out,
                    "// line {}: deny {} without {}",
                    r.line, r.tool, r.scope
                );
                let _ = writeln!(out, "@id({})", cedar_str(&id));
                if let Some(msg) = messages.get(&(r.tool.as_str(), r.scope.as_str(), true)) {
                    let _ = writeln!(out, "@reason({})", cedar_str(msg));
                }
                let _ = writeln!(
                    out,
                    "forbid (principal, action == Action::\"tools/call\", resource)\nwhen {{ {tool_test} }}\nunless {{ {cond} }};\n"
                );
            }
            ("allowed", "true", false) => {
                let _ = writeln!(out, "// line {}: allow {} with {}", r.line, r.tool, r.scope);
                let _ = writeln!(out, "@id({})", cedar_str(&id));
                let _ = writeln!(
                    out,
                    "permit (principal, action == Action::\"tools/call\", resource)\nwhen {{ {tool_test} && {cond} }};\n"
                );
            }
            ("allowed", _, _) => {
                return Err(unsupported(
                    "`allowed` rule other than `:= false` with `not contains(...)` or `:= true` with `contains(...)`",
                    r.line,
                ));
            }
            (key, _, _) => return Err(unsupported(&format!("result key `{key}`"), r.line)),
        }
    }
    for r in rules.iter().filter(|r| r.key == "external_message") {
        let paired = rules.iter().any(|a| {
            a.key == "allowed"
                && a.value == "false"
                && a.tool == r.tool
                && a.scope == r.scope
                && a.negated == r.negated
        });
        if !paired {
            return Err(unsupported(
                "`external_message` without a matching `allowed := false` rule",
                r.line,
            ));
        }
    }
    Ok(out)
}
