//! Prometheus metrics. Every handle used on the request path is created once at start-up, so a
//! check only increments pre-resolved counters.

use std::collections::HashMap;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use certbound_core::cache::{Lookup, Lookups};
use certbound_core::decision::{AllowReason, Decision, DenyReason};
use certbound_core::revocation::{CheckResult, Method, Observer};

pub struct Metrics {
    registry: Registry,
    /// One counter per reason, indexed by `index()`: every reason has one by construction.
    allow: [IntCounter; AllowReason::ALL.len()],
    deny: [IntCounter; DenyReason::ALL.len()],
    pub check_duration: Histogram,
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
                "Check decisions by outcome and reason.",
            ),
            &["decision", "reason"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        let allow = AllowReason::ALL.map(|r| decisions.with_label_values(&["allow", r.as_str()]));
        let deny = DenyReason::ALL.map(|r| decisions.with_label_values(&["deny", r.as_str()]));
        let check_duration = Histogram::with_opts(
            HistogramOpts::new(
                "certbound_check_duration_seconds",
                "Time to decide one check.",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0,
            ]),
        )?;
        registry.register(Box::new(check_duration.clone()))?;
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
                "Lookups in the verified-token and verified-certificate caches by result.",
            ),
            &["cache", "result"],
        )?;
        registry.register(Box::new(lookups.clone()))?;
        let pair = |cache: &str| {
            [Lookup::Hit, Lookup::Miss].map(|r| lookups.with_label_values(&[cache, r.as_str()]))
        };
        let cache_requests = CACHES.map(pair);
        let introspection_saturated = IntCounter::new(
            "certbound_introspection_saturated_total",
            "Introspections refused (503 introspection_unavailable) because \
             limits.max_introspection_calls calls were outstanding.",
        )?;
        registry.register(Box::new(introspection_saturated.clone()))?;
        Ok(Self {
            introspection_saturated,
            registry,
            cache_requests,
            allow,
            deny,
            check_duration,
            jwks_refresh_ok: refresh.with_label_values(&["ok"]),
            jwks_refresh_error: refresh.with_label_values(&["error"]),
            jwks_keys,
            reload_ok: reloads.with_label_values(&["ok"]),
            reload_error: reloads.with_label_values(&["error"]),
            reload_last_ok,
            revocation_checks,
        })
    }

    pub fn record(&self, decision: &Decision) {
        match decision {
            Decision::Allow { reason, .. } => self.allow[reason.index()].inc(),
            Decision::Deny(reason) => self.deny[reason.index()].inc(),
        }
    }

    /// Counts what the result caches answered during one check.
    pub fn record_cache(&self, lookups: &Lookups) {
        let found = [lookups.token, lookups.certificate, lookups.certificate_der];
        for (counters, lookup) in self.cache_requests.iter().zip(found) {
            match lookup {
                Some(Lookup::Hit) => counters[0].inc(),
                Some(Lookup::Miss) => counters[1].inc(),
                None => {}
            }
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

    #[test]
    fn decisions_are_counted_under_their_reason() {
        let m = Metrics::new().unwrap();
        m.record(&Decision::Deny(DenyReason::BindingMismatch));
        m.record(&Decision::Allow {
            reason: AllowReason::Bound,
            headers: vec![],
            remove: vec![],
        });
        let text = m.render();
        assert!(
            text.contains(
                r#"certbound_decisions_total{decision="deny",reason="binding_mismatch"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"certbound_decisions_total{decision="allow",reason="bound"} 1"#),
            "{text}"
        );
        // Every reason is exported from the start, so rate() works before the first deny.
        assert!(text.contains(r#"reason="cert_untrusted"} 0"#));
    }

    #[test]
    fn every_reason_is_pre_registered_and_nothing_else() {
        let m = Metrics::new().unwrap();
        let text = m.render();
        for (decision, want) in [
            ("allow", AllowReason::ALL.map(AllowReason::as_str).to_vec()),
            ("deny", DenyReason::ALL.map(DenyReason::as_str).to_vec()),
        ] {
            let prefix = format!("certbound_decisions_total{{decision=\"{decision}\",reason=\"");
            let registered: BTreeSet<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&prefix)?.strip_suffix("\"} 0"))
                .collect();
            let want: BTreeSet<&str> = want.into_iter().collect();
            assert_eq!(registered, want, "{decision}");
        }
    }

    #[test]
    fn every_deny_reason_is_counted_under_its_own_label() {
        let m = Metrics::new().unwrap();
        for r in DenyReason::ALL {
            m.record(&Decision::Deny(r));
        }
        let text = m.render();
        for r in DenyReason::ALL {
            let line = format!(
                "certbound_decisions_total{{decision=\"deny\",reason=\"{}\"}} 1",
                r.as_str()
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[test]
    fn cache_lookups_are_counted_by_cache_and_result() {
        let m = Metrics::new().unwrap();
        m.record_cache(&Lookups {
            token: Some(Lookup::Hit),
            certificate: Some(Lookup::Miss),
            certificate_der: None,
        });
        let text = m.render();
        for line in [
            r#"certbound_cache_requests_total{cache="token",result="hit"} 1"#,
            r#"certbound_cache_requests_total{cache="certificate",result="miss"} 1"#,
            r#"certbound_cache_requests_total{cache="certificate_der",result="hit"} 0"#,
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
}
