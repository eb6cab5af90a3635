//! Property-style check: per-tool slices decide exactly as the whole policy set does.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{User, ctx, input, user};
use serde_json::json;
use warden_policy::{
    Action, DefaultDecision, PolicyConfig, PolicyFile, ToolInfo, ToolRule, compile,
};

/// A small deterministic PRNG (xorshift64*), so failures reproduce from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const SCOPES: [&str; 4] = ["a:read", "b:read", "c:write", "d:admin"];
const GROUPS: [&str; 3] = ["eng", "ops", "finance"];
const TAGS: [&str; 3] = ["pii", "write", "beta"];

fn gen_tools(rng: &mut Rng) -> Vec<ToolInfo> {
    (0..(3 + rng.below(12)))
        .map(|i| {
            let up = format!("up{}", rng.below(3));
            let tags = TAGS.iter().filter(|_| rng.chance(30)).map(|t| t.to_string()).collect();
            ToolInfo {
                name: format!("{up}_t{i}"),
                upstream: up,
                upstream_name: format!("t{i}"),
                annotations: json!({ "readOnlyHint": rng.chance(50) }),
                tags,
                input_schema: json!({ "type": "object", "properties": { "n": { "type": "integer" } } }),
            }
        })
        .collect()
}

fn pick(rng: &mut Rng, from: &[&str], percent: u64) -> Vec<String> {
    from.iter()
        .filter(|_| rng.chance(percent))
        .map(|s| s.to_string())
        .collect()
}

fn gen_rule(rng: &mut Rng, tools: &[ToolInfo]) -> ToolRule {
    let mut rule = ToolRule::default();
    match rng.below(4) {
        0 => rule.upstream = Some(format!("up{}", rng.below(3))),
        1 => rule.tag = Some(TAGS[rng.below(TAGS.len())].to_string()),
        2 => {}
        _ => {
            let k = 1 + rng.below(3);
            rule.tools = (0..k)
                .map(|_| tools[rng.below(tools.len())].name.clone())
                .collect();
            rule.tools.dedup();
        }
    }
    if rng.chance(15) {
        rule.deny = true;
    } else {
        rule.require_scopes = pick(rng, &SCOPES, 25);
        rule.allow_groups = pick(rng, &GROUPS, 20);
        rule.step_up = !rule.require_scopes.is_empty() && rng.chance(50);
    }
    if rng.chance(50) {
        rule.reason = Some(format!("reason {}", rng.below(100)));
    }
    rule
}

/// Hand-written policies with assorted scopes, including context readers and `is`/`in` scopes.
fn gen_files(rng: &mut Rng, tools: &[ToolInfo]) -> Vec<PolicyFile> {
    let t = &tools[rng.below(tools.len())].name;
    let text = format!(
        r#"@id("f-eq") @reason("f-eq") forbid (principal, action == Action::"tools/call", resource == Tool::"{t}")
when {{ context has arguments && context.arguments has n && context.arguments.n > {} }};
@id("f-tag") permit (principal in Group::"{}", action, resource in Tag::"{}");
@id("f-is") @reason("f-is") forbid (principal, action, resource is Tool in Upstream::"up{}") when {{ resource.annotations has readOnlyHint && !resource.annotations.readOnlyHint && !principal.scopes.contains("c:write") }};
"#,
        rng.below(5),
        GROUPS[rng.below(GROUPS.len())],
        TAGS[rng.below(TAGS.len())],
        rng.below(3),
    );
    vec![PolicyFile {
        name: "gen.cedar".into(),
        text,
    }]
}

fn gen_users(rng: &mut Rng) -> Vec<User> {
    (0..6)
        .map(|_| {
            let u = user("u", &[], &[]);
            User {
                groups: pick(rng, &GROUPS, 40),
                scopes: pick(rng, &SCOPES, 50),
                ..u
            }
        })
        .collect()
}

#[test]
fn slices_decide_like_the_whole_set() {
    let mut decisions = 0;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let tools = gen_tools(&mut rng);
        let rules = (0..rng.below(12))
            .map(|_| gen_rule(&mut rng, &tools))
            .collect();
        let default = if rng.chance(50) {
            DefaultDecision::Allow
        } else {
            DefaultDecision::Deny
        };
        let cfg = PolicyConfig {
            default,
            rules,
            files: vec![],
            ..PolicyConfig::default()
        };
        let files = if rng.chance(60) {
            gen_files(&mut rng, &tools)
        } else {
            vec![]
        };
        let engine =
            compile(&cfg, &files, &tools, seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        for u in gen_users(&mut rng) {
            let p = engine.principal(&input(&u));
            for tool in &tools {
                for n in [None, Some(0), Some(9)] {
                    let args = n.map(|n| common::raw(json!({ "n": n })));
                    let c = ctx(args.as_deref());
                    let sliced = engine.decide(&p, Action::CallTool, Some(&tool.name), &c);
                    let whole = engine.decide_unsliced(&p, Action::CallTool, Some(&tool.name), &c);
                    assert_eq!(
                        sliced, whole,
                        "seed {seed}, tool {}, user {:?}/{:?}",
                        tool.name, u.groups, u.scopes
                    );
                    decisions += 1;
                }
            }
            for up in ["up0", "up1", "up2"] {
                let a = engine.decide(&p, Action::ReadResource, Some(up), &ctx(None));
                let b = engine.decide_unsliced(&p, Action::ReadResource, Some(up), &ctx(None));
                assert_eq!(a, b, "seed {seed}, upstream {up}");
            }
        }
    }
    assert!(decisions > 1000, "only {decisions} decisions compared");
}
