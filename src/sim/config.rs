//! Simulator configuration.

use std::fmt;
use std::time::Duration;

/// How the simulated BlueKing deployment looks and misbehaves.
///
/// Every random choice (the host population, flapping, faults) is drawn from generators seeded
/// with `seed`, so two simulators with the same config start from the same truth.
#[derive(Clone, PartialEq)]
pub struct SimConfig {
    /// Number of hosts generated at start (each with one agent).
    pub agents: usize,
    /// Seed for every random generator in the simulator.
    pub seed: u64,
    /// Fraction of agents the flapper toggles between running and not running each
    /// `flap_interval`; 0 disables flapping.
    pub flap_rate: f64,
    /// How often the flapper runs.
    pub flap_interval: Duration,
    /// Probability that a polling request gets a random fault (all kinds, all endpoints).
    pub fault_rate: f64,
    /// Fixed delay added before every polling response.
    pub latency: Duration,
    /// `bk_app_code` a caller must present in `X-Bkapi-Authorization`.
    pub app_code: String,
    /// `bk_app_secret` a caller must present in `X-Bkapi-Authorization`.
    pub app_secret: String,
    /// Fraction of hosts with an empty `bk_agent_id` (GSE 1.x style agents, id `cloud:ip`).
    pub legacy_ratio: f64,
    /// Fraction of inventory hosts GSE does not know (NodeMan lists them as `NOT_INSTALLED`).
    pub gse_unknown_ratio: f64,
    /// Fraction of hosts with only an IPv6 address (empty `inner_ip`). They always have a
    /// `bk_agent_id` (the `cloud:ip` id needs IPv4) and GSE 1.x, which is IPv4-only, never
    /// reports them.
    pub ipv6_only_ratio: f64,
    /// Whether GSE 2.0 exists. When false every `/api/bk-gse/prod/api/v2/...` path answers
    /// the gateway's HTTP 404 `API_NOT_FOUND` (1640401), as on a GSE 1.x-only deployment.
    /// Switchable at run time with `Simulator::set_gse_v2_enabled`.
    pub gse_v2: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            agents: 1000,
            seed: 1,
            flap_rate: 0.0,
            flap_interval: Duration::from_secs(5),
            fault_rate: 0.0,
            latency: Duration::ZERO,
            app_code: "agentwatch".to_owned(),
            app_secret: "sim-secret".to_owned(),
            legacy_ratio: 0.1,
            gse_unknown_ratio: 0.0,
            ipv6_only_ratio: 0.0,
            gse_v2: true,
        }
    }
}

// Hand-written so the secret never reaches a log line through `{:?}`.
impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("agents", &self.agents)
            .field("seed", &self.seed)
            .field("flap_rate", &self.flap_rate)
            .field("flap_interval", &self.flap_interval)
            .field("fault_rate", &self.fault_rate)
            .field("latency", &self.latency)
            .field("app_code", &self.app_code)
            .field("app_secret", &"***")
            .field("legacy_ratio", &self.legacy_ratio)
            .field("gse_unknown_ratio", &self.gse_unknown_ratio)
            .field("ipv6_only_ratio", &self.ipv6_only_ratio)
            .field("gse_v2", &self.gse_v2)
            .finish()
    }
}

/// Clamps a probability so that NaN or out-of-range input from a CLI flag cannot make
/// `random_bool`-style draws panic.
pub(crate) fn probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}
