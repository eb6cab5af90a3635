//! The log filter from `WARDEN_LOG`: unset (or empty) is `info`; a value that is not a valid
//! filter stops `warden` at start with an error naming it, instead of a silent `info` (or a
//! bare word such as `verbose`, which `EnvFilter` would read as a target and log nothing else).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// The variable the level comes from.
pub const VAR: &str = "WARDEN_LOG";

/// Why `WARDEN_LOG` was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "WARDEN_LOG={value:?} is not a log filter: {why} (levels: off, error, warn, info, debug, trace; e.g. WARDEN_LOG=info,dataplane=debug)"
)]
pub struct LogFilterError {
    value: String,
    why: String,
}

/// The filter for the value of `WARDEN_LOG` (`None`: unset).
pub fn filter(value: Option<&str>) -> Result<EnvFilter, LogFilterError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(EnvFilter::new("info"));
    };
    let refuse = |why: String| LogFilterError {
        value: value.to_owned(),
        why,
    };
    // A directive without `=` must be a level: `EnvFilter` takes any other bare word for a
    // target name, so a misspelt level would silence the log instead of failing.
    for d in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains(['=', '[']) && d.parse::<LevelFilter>().is_err() {
            return Err(refuse(format!(
                "`{d}` is not a level (to name a target, give it one: `{d}=debug`)"
            )));
        }
    }
    EnvFilter::builder()
        .parse(value)
        .map_err(|e| refuse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_filters_are_taken_and_unset_is_info() {
        for v in [
            None,
            Some(""),
            Some("warn"),
            Some("info,dataplane=debug"),
            Some("controlplane::upstream_watch=trace"),
            Some("off"),
        ] {
            assert!(filter(v).is_ok(), "{v:?}");
        }
        assert_eq!(filter(None).unwrap().to_string(), "info");
    }

    #[test]
    fn a_bad_level_is_an_error_naming_it() {
        for (v, names) in [
            ("verbose", "`verbose` is not a level"),
            ("warning", "`warning` is not a level"),
            ("info,dataplane=loud", "WARDEN_LOG=\"info,dataplane=loud\""),
            ("dataplane=verbose", "WARDEN_LOG=\"dataplane=verbose\""),
        ] {
            let e = filter(Some(v)).expect_err(v).to_string();
            assert!(e.contains(names), "{v}: {e}");
            assert!(e.contains("levels: off, error"), "{v}: {e}");
        }
    }
}
