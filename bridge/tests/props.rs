//! Property test: no string argument can change how many segments a request path has.

mod common;

use proptest::prelude::*;
use serde_json::json;

fn segments(path_and_query: &str) -> usize {
    let path = path_and_query.split('?').next().unwrap_or("");
    path.split('/').count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn path_segments_never_change(org in any::<String>(), repo in any::<String>(), label in any::<String>()) {
        let b = common::edge();
        // /v2/orgs/{org}/repos/{repo}: 6 segments counting the empty one before the first '/'.
        let template = segments("/v2/orgs/x/repos/y");
        match b.build_request("edge_getRepo", Some(&json!({"org": org, "repo": repo, "labels": [label]}))) {
            Ok(req) => {
                prop_assert!(req.path_and_query.starts_with("/v2/orgs/"));
                prop_assert_eq!(segments(&req.path_and_query), template);
                let path = req.path_and_query.split('?').next().unwrap_or("");
                for seg in path.split('/') {
                    prop_assert!(seg != "." && seg != "..");
                }
                prop_assert!(req.path_and_query.bytes().all(|c| c.is_ascii_graphic()));
                prop_assert_eq!(req.path_and_query.matches('?').count(), 1);
                prop_assert!(!req.path_and_query.contains('#'));
            }
            Err(e) => prop_assert!(org.is_empty() || repo.is_empty(), "{e}"),
        }
    }

    #[test]
    fn headers_never_carry_line_breaks(value in any::<String>()) {
        let b = common::edge();
        if let Ok(req) = b.build_request("edge_getRepo", Some(&json!({"org": "o", "repo": "r", "X-Request-Id": value}))) {
            for (_, v) in &req.headers {
                prop_assert!(!v.contains('\r') && !v.contains('\n'));
            }
        }
    }
}
