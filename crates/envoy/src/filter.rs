//! The filter behind the hooks: for now a spike that exercises every callback certbound needs,
//! so the ABI layer is proven in the real Envoy before certbound's pipeline is wired in. This is
//! the only file that changes when it is.
//!
//! Spike behaviour (tests/e2e/test_envoy_module.py asserts each effect):
//! - `filter_config`: a non-empty UTF-8 string (else Envoy refuses the configuration);
//!   per-route config: a non-empty UTF-8 policy name.
//! - `x-spike-deny` present: 401, `www-authenticate: Bearer error="invalid_token"`, body
//!   "denied"; counted `decisions{decision="deny"}`.
//! - `x-spike-panic` present: the hook panics (the ABI layer answers 500 "internal error").
//! - otherwise: request headers `x-certbound-policy` (the route's policy or "default"),
//!   `x-certbound-peer-digest` (the TLS peer certificate's SHA-256, removed when there is none),
//!   `x-certbound-source` (the downstream address), dynamic metadata `certbound.policy`, counted
//!   `decisions{decision="allow"}`; with `x-spike-async` the request is held, a thread wakes it
//!   20 ms later through the scheduler, and `x-certbound-async: done` is added before it goes on.

use std::time::Duration;

use crate::abi::{
    self, attribute, CounterId, EnvoyFilter, EnvoyFilterConfig, HeadersStatus, HttpFilterModule,
    LogLevel,
};

/// Policy name used on routes without a per-route config.
const DEFAULT_POLICY: &str = "default";
/// Event id of the spike's asynchronous wake-up.
const EVENT_ASYNC_DONE: u64 = 1;
const ASYNC_DELAY: Duration = Duration::from_millis(20);

/// Shared by every stream of one filter configuration.
pub struct SpikeConfig {
    /// The `filter_config` string (the configuration path, once certbound is wired in).
    pub source: String,
    decisions: Option<CounterId>,
}

/// A route's policy name.
pub struct RoutePolicy(pub String);

/// One stream.
pub struct Spike;

/// A non-empty UTF-8 string, or why not.
fn config_string(raw: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "is not UTF-8")?;
    if text.trim().is_empty() {
        return Err("is empty");
    }
    Ok(text.to_string())
}

impl Spike {
    fn count(config: &SpikeConfig, envoy: &EnvoyFilter<'_>, decision: &str) {
        if let Some(id) = config.decisions {
            envoy.increment_counter(id, &[decision], 1);
        }
    }

    fn deny(config: &SpikeConfig, envoy: &mut EnvoyFilter<'_>) -> HeadersStatus {
        envoy.send_response(
            401,
            &[(
                "www-authenticate",
                b"Bearer error=\"invalid_token\"".as_slice(),
            )],
            b"denied",
            "certbound_denied",
        );
        Self::count(config, envoy, "deny");
        HeadersStatus::StopIteration
    }

    fn allow(config: &SpikeConfig, envoy: &mut EnvoyFilter<'_>) {
        let policy = envoy
            .route_config()
            .map_or(DEFAULT_POLICY, |p| p.0.as_str());
        envoy.set_request_header("x-certbound-policy", policy.as_bytes());
        envoy.set_metadata_string("certbound", "policy", policy);
        // Copied out: Envoy's buffer is only valid until the next setter call.
        let digest = envoy
            .attribute_string(attribute::SHA256_PEER_CERTIFICATE_DIGEST)
            .map(<[u8]>::to_vec);
        match digest {
            Some(digest) => envoy.set_request_header("x-certbound-peer-digest", &digest),
            // Never let a client's own header pass for Envoy's verified certificate.
            None => envoy.remove_request_header("x-certbound-peer-digest"),
        };
        let source = envoy
            .attribute_string(attribute::SOURCE_ADDRESS)
            .map(<[u8]>::to_vec);
        if let Some(source) = source {
            envoy.set_request_header("x-certbound-source", &source);
        }
        Self::count(config, envoy, "allow");
    }

    /// Holds the request and wakes it from another thread through the scheduler.
    fn hold_and_wake_later(envoy: &mut EnvoyFilter<'_>) -> HeadersStatus {
        let scheduler = envoy.new_scheduler();
        let spawned = std::thread::Builder::new()
            .name("certbound-spike".into())
            .spawn(move || {
                std::thread::sleep(ASYNC_DELAY);
                scheduler.commit(EVENT_ASYNC_DONE);
            });
        if spawned.is_err() {
            // Nobody would ever resume the request: answer it now, closed.
            envoy.send_response(500, &[], b"internal error", "certbound_no_worker");
        }
        HeadersStatus::StopIteration
    }
}

impl HttpFilterModule for Spike {
    type Config = SpikeConfig;
    type RouteConfig = RoutePolicy;

    fn config_new(
        envoy: &EnvoyFilterConfig<'_>,
        _filter_name: &[u8],
        filter_config: &[u8],
    ) -> Option<SpikeConfig> {
        let source = match config_string(filter_config) {
            Ok(source) => source,
            Err(why) => {
                abi::log(LogLevel::Error, &format!("certbound: filter_config {why}: expected the path of a certbound configuration file"));
                return None;
            }
        };
        let decisions = envoy.define_counter("decisions", &["decision"]);
        if decisions.is_none() {
            abi::log(
                LogLevel::Warn,
                "certbound: Envoy refused the decisions counter; decisions are not counted",
            );
        }
        Some(SpikeConfig { source, decisions })
    }

    fn route_config_new(_filter_name: &[u8], config: &[u8]) -> Option<RoutePolicy> {
        match config_string(config) {
            Ok(name) => Some(RoutePolicy(name)),
            Err(why) => {
                abi::log(
                    LogLevel::Error,
                    &format!("certbound: per-route config {why}: expected a policy name"),
                );
                None
            }
        }
    }

    fn stream_new(_config: &SpikeConfig) -> Spike {
        Spike
    }

    fn on_request_headers(
        &mut self,
        config: &SpikeConfig,
        envoy: &mut EnvoyFilter<'_>,
        _end_of_stream: bool,
    ) -> HeadersStatus {
        if envoy.request_header("x-spike-panic").is_some() {
            panic!("x-spike-panic: a panic on the request path, on request");
        }
        if envoy.request_header("x-spike-deny").is_some() {
            return Self::deny(config, envoy);
        }
        let wants_async = envoy.request_header("x-spike-async").is_some();
        Self::allow(config, envoy);
        if wants_async {
            return Self::hold_and_wake_later(envoy);
        }
        HeadersStatus::Continue
    }

    fn on_scheduled(&mut self, _config: &SpikeConfig, envoy: &mut EnvoyFilter<'_>, event_id: u64) {
        if event_id == EVENT_ASYNC_DONE {
            envoy.set_request_header("x-certbound-async", b"done");
            envoy.continue_decoding();
        }
    }

    fn count_panic(config: &SpikeConfig, envoy: &EnvoyFilter<'_>) {
        Self::count(config, envoy, "deny");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_config_must_be_non_empty_utf8() {
        assert_eq!(
            config_string(b"/etc/certbound/certbound.toml"),
            Ok("/etc/certbound/certbound.toml".to_string())
        );
        assert_eq!(config_string(b""), Err("is empty"));
        assert_eq!(config_string(b"  \n"), Err("is empty"));
        assert_eq!(config_string(b"\xff\xfe"), Err("is not UTF-8"));
    }

    #[test]
    fn route_config_names_a_policy() {
        let policy = Spike::route_config_new(b"certbound", b"strict");
        assert_eq!(policy.map(|p| p.0), Some("strict".to_string()));
        assert!(Spike::route_config_new(b"certbound", b"").is_none());
    }
}
