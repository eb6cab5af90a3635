//! The Prometheus recorder: installed once per process, rendered only by the admin port.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the recorder (idempotent; several gateways in one test process share it).
pub fn install() {
    HANDLE.get_or_init(|| {
        let buckets = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0,
        ];
        let b = PrometheusBuilder::new().set_buckets(&buckets).ok()?;
        b.install_recorder()
            .map_err(|e| tracing::error!(error = %e, "Metrics recorder not installed"))
            .ok()
    });
}

/// Render the exposition text; also runs upkeep (histogram draining).
pub fn render() -> String {
    match HANDLE.get().and_then(Option::as_ref) {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    }
}
