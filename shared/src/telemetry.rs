//! Tracing setup and the process-wide Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Installs a `fmt` subscriber filtered by `RUST_LOG` (default `default_filter`); a second call
/// (several services in one process) is a no-op. The embedded broker's consensus library
/// (openraft, in a cluster) is left out unless `RUST_LOG` names it: it narrates every vote and
/// every failed attempt to reach a stopped node; the broker logs those events itself.
///
/// `RUST_LOG` is a list of `target=level` and a default `level` (`info,broker=debug`), read by
/// tracing-subscriber's `Targets`: its `EnvFilter` also takes span and field filters, which no
/// one here uses, and brings a regular-expression engine that was a tenth of a first build.
pub fn init_tracing(default_filter: &str) {
    let asked = std::env::var("RUST_LOG").unwrap_or_else(|_| default_filter.to_owned());
    let directives = if asked.contains("openraft") {
        asked
    } else {
        format!("{asked},openraft=off")
    };
    let filter: Targets = directives
        .parse()
        .or_else(|_| default_filter.parse())
        .unwrap_or_default();
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .with(filter)
        .try_init();
}

/// The Prometheus recorder. A process has one metrics recorder, so services embedded in one
/// process (the lab) share it and tell their series apart by the `service` label.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Someone else may own the global recorder (a test harness); then we render ours only.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
