//! Prometheus metrics. Every handle used on the request path is created before a check can use
//! it: at start-up, and for the per-policy series when a configuration is swapped in, so a check
//! only looks its policy up and increments pre-resolved counters.
//!
//! The `policy` label takes only the names of the configuration in force (`default` for the top
//! level) and [`NO_POLICY`]: whatever name a route asks for, the number of series stays bounded.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use certbound_core::cache::Lookup;
use certbound_core::decision::{AllowReason, Decision, DenyReason};
use certbound_core::engine::Engine;
use certbound_core::pipeline::{Outcome, NO_POLICY};
use certbound_core::revocation::{CheckResult, Method, Observer};

/// The buckets of `certbound_check_duration_seconds`: a cached check takes tens of
/// microseconds, one that waits on the network up to Envoy's timeout.
const DURATION_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

pub struct Metrics {
    registry: Registry,
    decisions: IntCounterVec,
    durations: HistogramVec,
    lookups: IntCounterVec,
    /// The series of each policy in force, swapped whole with the configuration.
    policies: ArcSwap<HashMap<String, Arc<PolicySeries>>>,
    /// Checks no policy of the configuration decided.
    no_policy: Arc<PolicySeries>,
    pub jwks_refresh_ok: IntCounter,
    pub jwks_refresh_error: IntCounter,
    pub jwks_keys: IntGauge,
    pub reload_ok: IntCounter,
    pub reload_error: IntCounter,
    /// Checks refused because `limits.max_introspection_calls` calls were outstanding.
    pub introspection_saturated: IntCounter,
    /// 1 while the configuration serving is the one on disk, 0 after a refused reload: a
    /// counter alone does not say whether the latest edit (a removed CA, say) is in effect.
    pub reload_last_ok: IntGauge,
    revocation_checks: HashMap<(Method, CheckResult), IntCounter>,
}

/// One policy's handles.
struct PolicySeries {
    /// One counter per reason, indexed by `index()`: every reason has one by construction.
    allow: [IntCounter; AllowReason::ALL.len()],
    deny: [IntCounter; DenyReason::ALL.len()],
    check_duration: Histogram,
    /// `[hit, miss]` per cache, in the order of `CACHES`.
    cache_requests: [[IntCounter; 2]; 3],
}

/// The `cache` label values of `certbound_cache_requests_total`.
pub const CACHES: [&str; 3] = ["token", "certificate", "certificate_der"];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "certbound_decisions_total",
                "Check decisions by policy, outcome and reason.",
            ),
            &["policy", "decision", "reason"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "certbound_check_duration_seconds",
                "Time to decide one check, by policy.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["policy"],
        )?;
        registry.register(Box::new(durations.clone()))?;
        let refresh = IntCounterVec::new(
            Opts::new("certbound_jwks_refresh_total", "JWKS fetches by result."),
            &["result"],
        )?;
        registry.register(Box::new(refresh.clone()))?;
        let jwks_keys = IntGauge::new("certbound_jwks_keys", "Signing keys currently loaded.")?;
        registry.register(Box::new(jwks_keys.clone()))?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "certbound_config_reloads_total",
                "Configuration reloads by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        let reload_last_ok = IntGauge::new(
            "certbound_config_last_reload_successful",
            "1 when the last configuration load (start-up or reload) succeeded, 0 when the last reload was refused.",
        )?;
        registry.register(Box::new(reload_last_ok.clone()))?;
        let checks = IntCounterVec::new(
            Opts::new(
                "certbound_revocation_checks_total",
                "OCSP and CRL consultations by result (cached statuses are not counted).",
            ),
            &["method", "result"],
        )?;
        registry.register(Box::new(checks.clone()))?;
        let revocation_checks = Method::ALL
            .iter()
            .flat_map(|m| CheckResult::ALL.iter().map(move |r| (*m, *r)))
            .map(|(m, r)| ((m, r), checks.with_label_values(&[m.as_str(), r.as_str()])))
            .collect();
        let lookups = IntCounterVec::new(
            Opts::new(
                "certbound_cache_requests_total",
                "Lookups in the verified-token and verified-certificate caches by policy and result.",
            ),
            &["policy", "cache", "result"],
        )?;
        registry.register(Box::new(lookups.clone()))?;
        let introspection_saturated = IntCounter::new(
            "certbound_introspection_saturated_total",
            "Introspections refused (503 introspection_unavailable) because \
             limits.max_introspection_calls calls were outstanding.",
        )?;
        registry.register(Box::new(introspection_saturated.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "certbound_build_info",
                "Always 1: the version and the commit this binary was built from.",
            ),
            &["version", "commit"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("BUILD_COMMIT")])
            .set(1);
        register_process_metrics(&registry)?;
        let no_policy = Arc::new(PolicySeries::new(
            &decisions, &durations, &lookups, NO_POLICY,
        ));
        Ok(Self {
            introspection_saturated,
            registry,
            policies: ArcSwap::from_pointee(HashMap::new()),
            no_policy,
            decisions,
            durations,
            lookups,
            jwks_refresh_ok: refresh.with_label_values(&["ok"]),
            jwks_refresh_error: refresh.with_label_values(&["error"]),
            jwks_keys,
            reload_ok: reloads.with_label_values(&["ok"]),
            reload_error: reloads.with_label_values(&["error"]),
            reload_last_ok,
            revocation_checks,
        })
    }

    /// Makes the per-policy series of `engine`'s policies, before it serves: every reason of
    /// every policy is exported from the start, so `rate()` works before its first deny. The
    /// series of policies `engine` no longer has are dropped, so reloads that rename policies
    /// do not pile up series.
    pub fn set_policies(&self, engine: &Engine) {
        let old = self.policies.load();
        let mut new = HashMap::new();
        for active in engine.iter() {
            let name = active.policy.name.as_str();
            let series = match old.get(name) {
                Some(kept) => kept.clone(),
                None => Arc::new(PolicySeries::new(
                    &self.decisions,
                    &self.durations,
                    &self.lookups,
                    name,
                )),
            };
            new.insert(name.to_string(), series);
        }
        for gone in old.keys().filter(|n| !new.contains_key(*n)) {
            self.remove_policy(gone);
        }
        self.policies.store(Arc::new(new));
    }

    fn remove_policy(&self, name: &str) {
        // Errors only say a series was never made: nothing to remove.
        for (decision, reasons) in [
            ("allow", AllowReason::ALL.map(AllowReason::as_str).to_vec()),
            ("deny", DenyReason::ALL.map(DenyReason::as_str).to_vec()),
        ] {
            for reason in reasons {
                let _ = self
                    .decisions
                    .remove_label_values(&[name, decision, reason]);
            }
        }
        let _ = self.durations.remove_label_values(&[name]);
        for cache in CACHES {
            for result in [Lookup::Hit, Lookup::Miss] {
                let _ = self
                    .lookups
                    .remove_label_values(&[name, cache, result.as_str()]);
            }
        }
    }

    /// Counts one check: its decision, what the result caches answered and how long it took,
    /// under the policy that decided it.
    pub fn record(&self, outcome: &Outcome, seconds: f64) {
        let policies = self.policies.load();
        let series = policies
            .get(outcome.policy_label())
            .unwrap_or(&self.no_policy);
        match &outcome.decision {
            Decision::Allow { reason, .. } => series.allow[reason.index()].inc(),
            Decision::Deny(reason) => series.deny[reason.index()].inc(),
        }
        let found = [
            outcome.cache.token,
            outcome.cache.certificate,
            outcome.cache.certificate_der,
        ];
        for (counters, lookup) in series.cache_requests.iter().zip(found) {
            match lookup {
                Some(Lookup::Hit) => counters[0].inc(),
                Some(Lookup::Miss) => counters[1].inc(),
                None => {}
            }
        }
        series.check_duration.observe(seconds);
        if outcome.introspection_saturated {
            self.introspection_saturated.inc();
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl PolicySeries {
    fn new(
        decisions: &IntCounterVec,
        durations: &HistogramVec,
        lookups: &IntCounterVec,
        policy: &str,
    ) -> Self {
        let pair = |cache: &str| {
            [Lookup::Hit, Lookup::Miss]
                .map(|r| lookups.with_label_values(&[policy, cache, r.as_str()]))
        };
        Self {
            allow: AllowReason::ALL
                .map(|r| decisions.with_label_values(&[policy, "allow", r.as_str()])),
            deny: DenyReason::ALL
                .map(|r| decisions.with_label_values(&[policy, "deny", r.as_str()])),
            check_duration: durations.with_label_values(&[policy]),
            cache_requests: CACHES.map(pair),
        }
    }
}

/// `process_*` (CPU, memory, file descriptors, threads, start time) of this process, read from
/// `/proc` at each scrape.
#[cfg(target_os = "linux")]
fn register_process_metrics(registry: &Registry) -> Result<(), prometheus::Error> {
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
}

/// Elsewhere the prometheus crate has no process collector; certbound ships for Linux.
#[cfg(not(target_os = "linux"))]
fn register_process_metrics(_: &Registry) -> Result<(), prometheus::Error> {
    Ok(())
}

impl certbound_adapters::jwks::FetchObserver for Metrics {
    fn fetched(&self, ok: bool) {
        if ok {
            self.jwks_refresh_ok.inc();
        } else {
            self.jwks_refresh_error.inc();
        }
    }
}

impl Observer for Metrics {
    fn consulted(&self, method: Method, result: CheckResult) {
        if let Some(c) = self.revocation_checks.get(&(method, result)) {
            c.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    use certbound_core::cache::Lookups;
    use certbound_core::engine::Active;
    use certbound_core::policy::Policy;
    use certbound_core::token::KeyStore;

    /// An engine with the default policy and `named` ones.
    fn engine(named: &[&str]) -> Engine {
        let active = |name: &str| {
            Active::in_memory(
                Policy::new(name, "https://idp.test"),
                Arc::new(KeyStore::new()),
            )
        };
        let mut e = Engine::single(active("default"));
        e.named = named
            .iter()
            .map(|n| (n.to_string(), Arc::new(active(n))))
            .collect();
        e
    }

    fn metrics(named: &[&str]) -> Metrics {
        let m = Metrics::new().unwrap();
        m.set_policies(&engine(named));
        m
    }

    fn decided(policy: &str, decision: Decision) -> Outcome {
        Outcome {
            decision,
            policy: policy.to_string(),
            ..Outcome::default()
        }
    }

    fn allow(reason: AllowReason) -> Decision {
        Decision::Allow {
            reason,
            headers: vec![],
            remove: vec![],
        }
    }

    /// The `policy` label values of `certbound_decisions_total` in `text`.
    fn policy_labels(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("certbound_decisions_total{"))
            .filter_map(|l| l.split("policy=\"").nth(1)?.split('"').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn decisions_are_counted_under_their_policy_and_reason() {
        let m = metrics(&["strict"]);
        m.record(
            &decided("strict", Decision::Deny(DenyReason::BindingMismatch)),
            0.001,
        );
        m.record(&decided("default", allow(AllowReason::Bound)), 0.001);
        let text = m.render();
        for line in [
            r#"certbound_decisions_total{decision="deny",policy="strict",reason="binding_mismatch"} 1"#,
            r#"certbound_decisions_total{decision="deny",policy="default",reason="binding_mismatch"} 0"#,
            r#"certbound_decisions_total{decision="allow",policy="default",reason="bound"} 1"#,
            r#"certbound_check_duration_seconds_count{policy="strict"} 1"#,
            r#"certbound_check_duration_seconds_count{policy="default"} 1"#,
            // Every reason is exported from the start, so rate() works before the first deny.
            r#"certbound_decisions_total{decision="deny",policy="strict",reason="cert_untrusted"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn every_reason_of_every_policy_is_pre_registered_and_nothing_else() {
        let text = metrics(&["strict", "dpop"]).render();
        let policies = ["default", "strict", "dpop", NO_POLICY];
        assert_eq!(
            policy_labels(&text),
            policies.iter().map(|p| p.to_string()).collect()
        );
        for policy in policies {
            for (decision, want) in [
                ("allow", AllowReason::ALL.map(AllowReason::as_str).to_vec()),
                ("deny", DenyReason::ALL.map(DenyReason::as_str).to_vec()),
            ] {
                let prefix = format!(
                    "certbound_decisions_total{{decision=\"{decision}\",policy=\"{policy}\",reason=\""
                );
                let registered: BTreeSet<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix(&prefix)?.strip_suffix("\"} 0"))
                    .collect();
                let want: BTreeSet<&str> = want.into_iter().collect();
                assert_eq!(registered, want, "{policy} {decision}");
            }
        }
    }

    #[test]
    fn every_deny_reason_is_counted_under_its_own_label() {
        let m = metrics(&[]);
        for r in DenyReason::ALL {
            m.record(&decided("default", Decision::Deny(r)), 0.0);
        }
        let text = m.render();
        for r in DenyReason::ALL {
            // `unknown_policy` names what the route asked for, never a policy that decided.
            let policy = match r {
                DenyReason::UnknownPolicy => NO_POLICY,
                _ => "default",
            };
            let line = format!(
                "certbound_decisions_total{{decision=\"deny\",policy=\"{policy}\",reason=\"{}\"}} 1",
                r.as_str()
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[test]
    fn names_the_configuration_does_not_know_are_counted_under_one_fixed_value() {
        let m = metrics(&["strict"]);
        for i in 0..50 {
            let asked = format!("route-{i}");
            m.record(
                &decided(&asked, Decision::Deny(DenyReason::UnknownPolicy)),
                0.0,
            );
        }
        // A deny before any policy was chosen.
        m.record(
            &decided("", Decision::Deny(DenyReason::NoMatchingRoute)),
            0.0,
        );
        let text = m.render();
        assert_eq!(
            policy_labels(&text),
            ["default", "strict", NO_POLICY]
                .iter()
                .map(|p| p.to_string())
                .collect()
        );
        for line in [
            r#"certbound_decisions_total{decision="deny",policy="(none)",reason="unknown_policy"} 50"#,
            r#"certbound_decisions_total{decision="deny",policy="(none)",reason="no_matching_route"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn a_reload_drops_the_series_of_removed_policies_and_keeps_the_counts_of_the_others() {
        let m = metrics(&["old", "kept"]);
        m.record(&decided("kept", allow(AllowReason::Bound)), 0.0);
        m.record(&decided("old", allow(AllowReason::Bound)), 0.0);
        m.set_policies(&engine(&["kept", "new"]));
        let text = m.render();
        assert_eq!(
            policy_labels(&text),
            ["default", "kept", "new", NO_POLICY]
                .iter()
                .map(|p| p.to_string())
                .collect()
        );
        assert!(
            !text.contains(r#"policy="old""#),
            "no series of a removed policy: {text}"
        );
        assert!(text.contains(
            r#"certbound_decisions_total{decision="allow",policy="kept",reason="bound"} 1"#
        ));
    }

    #[test]
    fn cache_lookups_are_counted_by_policy_cache_and_result() {
        let m = metrics(&["strict"]);
        let mut outcome = decided("strict", allow(AllowReason::Bound));
        outcome.cache = Lookups {
            token: Some(Lookup::Hit),
            certificate: Some(Lookup::Miss),
            certificate_der: None,
        };
        m.record(&outcome, 0.0);
        let text = m.render();
        for line in [
            r#"certbound_cache_requests_total{cache="token",policy="strict",result="hit"} 1"#,
            r#"certbound_cache_requests_total{cache="certificate",policy="strict",result="miss"} 1"#,
            r#"certbound_cache_requests_total{cache="certificate_der",policy="strict",result="hit"} 0"#,
            r#"certbound_cache_requests_total{cache="token",policy="default",result="hit"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn revocation_consultations_are_counted_by_method_and_result() {
        let m = Metrics::new().unwrap();
        m.consulted(Method::Ocsp, CheckResult::Revoked);
        let text = m.render();
        assert!(
            text.contains(r#"certbound_revocation_checks_total{method="ocsp",result="revoked"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"certbound_revocation_checks_total{method="crl",result="error"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn build_info_names_the_version_and_the_commit_of_the_build() {
        let text = Metrics::new().unwrap().render();
        let line = format!(
            "certbound_build_info{{commit=\"{}\",version=\"{}\"}} 1",
            env!("BUILD_COMMIT"),
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&line), "{line} in {text}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_describe_this_process() {
        let text = Metrics::new().unwrap().render();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        };
        assert!(
            value("process_resident_memory_bytes").is_some_and(|v| v > 0.0),
            "{text}"
        );
        assert!(value("process_open_fds").is_some_and(|v| v > 0.0), "{text}");
        assert!(
            value("process_start_time_seconds").is_some_and(|v| v > 1.6e9),
            "{text}"
        );
        assert!(value("process_cpu_seconds_total").is_some(), "{text}");
    }
}
