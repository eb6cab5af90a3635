//! What the policy commands print: the test report, JUnit XML for CI systems, coverage,
//! decision changes, and an explanation in words.

use std::fmt::Write as _;

use warden_policy::{Explanation, PolicyOutcome};

use super::run::{Change, Coverage, Outcome, by_file};

/// The readable test report: a line per test, and for a failure what was expected and got.
pub fn text(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    let mut file = None;
    for o in outcomes {
        if file != Some(&o.file) {
            let _ = writeln!(s, "{}", o.file.display());
            file = Some(&o.file);
        }
        let mark = if o.passed() { "ok  " } else { "FAIL" };
        let _ = writeln!(s, "  {mark} {}", o.name);
        if o.passed() {
            continue;
        }
        if let Some(c) = &o.claims {
            let _ = writeln!(
                s,
                "       caller:   {} via {}",
                c.describe(),
                c.client.as_deref().unwrap_or("-")
            );
        }
        let _ = writeln!(s, "       target:   {}", o.target);
        for f in &o.failures {
            let _ = writeln!(s, "       {f}");
        }
        if let Some(d) = &o.got {
            let _ = writeln!(
                s,
                "       decided by: [{}]{}",
                d.policy_ids.join(", "),
                d.reason
                    .as_deref()
                    .map(|r| format!(" — {r:?}"))
                    .unwrap_or_default()
            );
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    let _ = writeln!(
        s,
        "{} tests, {} passed, {failed} failed",
        outcomes.len(),
        outcomes.len() - failed
    );
    s
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry other control characters at all.
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML (one `<testsuite>` per test file), as CI systems read it.
pub fn junit(outcomes: &[Outcome]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    let _ = writeln!(
        s,
        "<testsuites name=\"warden policy test\" tests=\"{}\" failures=\"{failed}\">",
        outcomes.len()
    );
    for (file, (total, passed)) in by_file(outcomes) {
        let name = xml(&file.display().to_string());
        let _ = writeln!(
            s,
            "  <testsuite name=\"{name}\" tests=\"{total}\" failures=\"{}\">",
            total - passed
        );
        for o in outcomes.iter().filter(|o| o.file == file) {
            let _ = write!(
                s,
                "    <testcase classname=\"{name}\" name=\"{}\"",
                xml(&o.name)
            );
            if o.passed() {
                s.push_str("/>\n");
            } else {
                let message = xml(&o.failures.join("; "));
                let _ = writeln!(
                    s,
                    ">\n      <failure message=\"{message}\">{message}</failure>\n    </testcase>"
                );
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

pub fn coverage(c: &Coverage) -> String {
    let mut s = String::new();
    let list = |s: &mut String, title: &str, v: &[String]| {
        let _ = writeln!(s, "{title}: {}", if v.is_empty() { "none" } else { "" });
        for x in v {
            let _ = writeln!(s, "  {x}");
        }
    };
    list(
        &mut s,
        "policies no test exercises",
        &c.unexercised_policies,
    );
    list(
        &mut s,
        "tools no permit reaches (nobody can call them)",
        &c.unreachable_tools,
    );
    list(&mut s, "tools no test calls", &c.untested_tools);
    s
}

pub fn changes(changes: &[Change]) -> String {
    let mut s = String::new();
    for c in changes {
        let _ = writeln!(
            s,
            "{}: {} → {}: {} → {}{}",
            c.source,
            c.who,
            c.target,
            c.old,
            c.new,
            if c.approximate {
                " (approximate: its policies read the context; replayed without arguments)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(s, "{} decisions change", changes.len());
    s
}

/// An explanation in words (the JSON form is the `Explanation` itself).
pub fn explanation(e: &Explanation) -> String {
    let mut s = String::new();
    let d = &e.decision;
    let _ = writeln!(
        s,
        "decision: {}{}{}",
        e.kind.as_str(),
        if d.policy_ids.is_empty() {
            String::new()
        } else {
            format!(" by [{}]", d.policy_ids.join(", "))
        },
        d.reason
            .as_deref()
            .map(|r| format!(" — {r:?}"))
            .unwrap_or_default()
    );
    if let Some(scopes) = &d.step_up_scopes {
        let _ = writeln!(
            s,
            "step-up: the client may ask for scopes [{}]",
            scopes.join(" ")
        );
    }
    let _ = writeln!(s, "request:");
    let _ = writeln!(s, "  principal: {}", e.principal);
    let _ = writeln!(s, "  action:    {}", e.action);
    let _ = writeln!(s, "  resource:  {}", e.resource);
    let _ = writeln!(s, "  context:   {}", e.context);
    let _ = writeln!(s, "policies:");
    for p in &e.policies {
        let what = match &p.outcome {
            PolicyOutcome::Decided => "decided".to_owned(),
            PolicyOutcome::Satisfied => {
                "satisfied, did not decide (a forbid beats a permit)".to_owned()
            }
            PolicyOutcome::NotSatisfied(why) => format!("does not apply: {why}"),
            PolicyOutcome::Error(m) => format!("error: {m}"),
            PolicyOutcome::OutsideSlice => {
                "skipped: its resource scope cannot match this target".to_owned()
            }
        };
        let _ = writeln!(s, "  {:6} {}: {what}", p.effect, p.id);
        if !matches!(p.outcome, PolicyOutcome::OutsideSlice) {
            for line in p.text.lines() {
                let _ = writeln!(s, "           | {line}");
            }
        }
    }
    s
}
