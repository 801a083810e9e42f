//! What a failed API call means: the BlueKing gateway's own codes (bk-api.md B §0.3),
//! the backends' permission codes (§0.2) and the transport failures, each turned into a
//! cause and a fix that names the config key, the permission or the header to look at.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::{
    config::Config,
    sources::bk::{ApiError, Upstream},
};

/// Gateway codes (bk-api.md B §0.3) and the backends' permission codes (§0.2).
mod code {
    pub const INVALID_ARGS: i64 = 1_640_001;
    pub const APP_NO_PERMISSION: i64 = 1_640_301;
    pub const IP_NOT_ALLOWED: i64 = 1_640_302;
    pub const API_NOT_FOUND: i64 = 1_640_401;
    pub const RATE_LIMITS: std::ops::RangeInclusive<i64> = 1_642_901..=1_642_904;
    /// bk-monitor treats these as "the user has no permission" (IAM, in the backend).
    pub const USER_NO_PERMISSION: [i64; 2] = [9_900_403, 35_999_999];
}

/// Which API a check calls, for naming the permission and the right path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    GseV2,
    GseV1,
    Nodeman,
    Cmdb,
}

/// One API as the diagnosis needs to describe it.
#[derive(Debug, Clone)]
pub(super) struct Api {
    pub kind: Kind,
    /// The check's name, e.g. `api gse list_agent_state`.
    pub check: &'static str,
    /// Config key of the base URL, e.g. `gse.esb_base_url`.
    pub base_key: &'static str,
    pub base_url: String,
    /// The resource as the gateway (or ESB) publishes it, relative to the base.
    pub resource: String,
}

impl Api {
    fn upstream(&self) -> Upstream {
        match self.kind {
            Kind::GseV2 | Kind::GseV1 => Upstream::Gse,
            Kind::Nodeman => Upstream::Nodeman,
            Kind::Cmdb => Upstream::Cmdb,
        }
    }

    fn system(&self) -> &'static str {
        match self.upstream() {
            Upstream::Gse => "GSE",
            Upstream::Nodeman => "NodeMan",
            Upstream::Cmdb => "CMDB",
        }
    }

    /// `bk-gse`, from the base URL's `/api/{gateway}/{stage}/` when it has that shape.
    fn gateway(&self) -> String {
        let path = reqwest::Url::parse(&self.base_url)
            .map(|u| u.path().to_owned())
            .unwrap_or_default();
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        match (segments.next(), segments.next(), segments.next()) {
            (Some("api"), Some(gw), Some(_)) if gw != "c" => gw.to_owned(),
            _ => format!("bk-{}", self.upstream().label()),
        }
    }

    fn is_esb(&self) -> bool {
        self.base_url.contains("/api/c/compapi/")
    }

    /// What to ask for: `bk-gse: cluster/list_agent_state`, or the ESB component.
    pub fn permission(&self) -> String {
        if self.is_esb() {
            let system = self.upstream().label();
            let action = self.resource.trim_end_matches('/');
            format!("ESB component {system}.{action}")
        } else {
            format!("{}: {}", self.gateway(), self.resource)
        }
    }
}

/// What the diagnosis needs from the config.
pub(super) struct Ctx<'a> {
    pub cfg: &'a Config,
    pub timeout: Duration,
}

/// The API checks for `cfg`; upstreams whose key is not in `reachable` are skipped.
/// HTTP 404 or the gateway's API_NOT_FOUND: the path does not exist (here).
pub(super) fn is_not_found(e: &ApiError) -> bool {
    e.business_code() == Some(code::API_NOT_FOUND)
        || matches!(e, ApiError::Http { status: 404, .. })
}

/// (detail, fix) for a failed call: the cause first, then the error as received.
pub(super) fn explain(api: &Api, ctx: &Ctx, e: &ApiError) -> (String, String) {
    let cfg = ctx.cfg;
    let app = &cfg.bk.app_code;
    let perm = api.permission();
    let prefix = api.upstream().label();
    let key = api.base_key;
    let code = e.business_code();
    let (cause, fix) = match e {
        _ if code == Some(code::INVALID_ARGS) => {
            let placeholder = cfg
                .bk
                .app_secret
                .as_ref()
                .is_some_and(|s| super::is_placeholder(s.expose_secret()));
            let first = if placeholder {
                "the app secret is still an example value; "
            } else {
                ""
            };
            (
                "1640001: bad app code or secret, or the auth header is missing".to_owned(),
                format!(
                    "{first}check bk.app_code (\"{app}\") and the app secret (bk.app_secret, \
                     bk.app_secret_file or AGENTWATCH__BK__APP_SECRET): the app must exist on \
                     this BlueKing and the secret must be its current one (it may have been \
                     reset, or the app disabled); the gateway also answers 1640001 when the \
                     X-Bkapi-Authorization header is missing, e.g. stripped by a proxy"
                ),
            )
        }
        _ if code == Some(code::APP_NO_PERMISSION) => {
            let where_ = if api.is_esb() {
                format!(
                    "your app → Cloud API permissions → component APIs → {}",
                    api.system()
                )
            } else {
                format!(
                    "your app → Cloud API permissions → gateway {} → {}",
                    api.gateway(),
                    api.resource
                )
            };
            (
                format!("1640301: app \"{app}\" has no permission for {perm}"),
                format!(
                    "request the permission \"{perm}\" for app \"{app}\" in the BlueKing \
                     Developer Center ({where_}) and have the gateway's admin approve it; \
                     permissions expire, so an API that used to work may need a renewal"
                ),
            )
        }
        _ if code == Some(code::IP_NOT_ALLOWED) => (
            format!("1640302: this machine's IP is not whitelisted for {perm}"),
            format!(
                "ask the admin of gateway {} to add the address agentwatch's requests come from \
                 (for a pod: the node's or the NAT's egress IP, as the gateway's access log \
                 shows it) to the IP access control of the stage or resource, or of app \
                 \"{app}\"",
                api.gateway()
            ),
        ),
        _ if is_not_found(e) => (
            format!("1640401: no API at {key} + {}", api.resource),
            not_found_fix(api, cfg),
        ),
        ApiError::RateLimited { retry_after, .. } => {
            let reset = retry_after.map_or_else(
                || "the answer carried no X-Bkapi-RateLimit-Reset".to_owned(),
                |d| {
                    format!(
                        "X-Bkapi-RateLimit-Reset: {} (the limit resets then)",
                        humantime::format_duration(d)
                    )
                },
            );
            (
                format!("HTTP 429: rate limited on {perm}; {reset}"),
                format!(
                    "wait for the reset and run doctor again; if it persists, the quota of app \
                     \"{app}\" on {perm} is too small for the load: everything using this app \
                     code shares it (a running agentwatch included). Lower {prefix}.concurrency \
                     or raise poll.interval, or ask the gateway admin for a higher limit; \
                     agentwatch itself waits for the reset and retries"
                ),
            )
        }
        _ if code.is_some_and(|c| code::RATE_LIMITS.contains(&c)) => (
            format!("rate limited on {perm}"),
            format!(
                "lower {prefix}.concurrency or raise poll.interval, or ask the gateway admin \
                 for a higher limit for app \"{app}\""
            ),
        ),
        _ if code.is_some_and(|c| code::USER_NO_PERMISSION.contains(&c)) => (
            format!(
                "{} refuses user \"{}\" (no permission in {} itself)",
                api.system(),
                cfg.bk.username,
                api.system()
            ),
            format!(
                "grant bk.username (\"{}\") the permission in {} (BlueKing IAM), or set \
                 bk.username to a user that has it",
                cfg.bk.username,
                api.system()
            ),
        ),
        ApiError::Http { status, .. } if *status >= 500 => (
            format!(
                "the gateway answered, but the {} backend behind it failed",
                api.system()
            ),
            format!(
                "the {} service is down or overloaded (gateway 1650200/1650201: cannot reach \
                 the backend; 1650401: backend timeout): check its health; agentwatch retries \
                 these, so short blips are harmless",
                api.system()
            ),
        ),
        ApiError::Http { status, .. } => (
            format!("the gateway refused the call (HTTP {status})"),
            format!("read the message above; check {key} and the app's permissions for {perm}"),
        ),
        ApiError::Timeout { .. } => (
            format!(
                "no answer within {} (--timeout)",
                humantime::format_duration(ctx.timeout)
            ),
            format!(
                "{key} was reachable but this call got no answer in time: the {} backend \
                 behind the gateway is slow or overloaded (check its health), or a firewall or \
                 proxy holds the request; try a longer --timeout (the service's limit is \
                 {prefix}.timeout)",
                api.system()
            ),
        ),
        ApiError::Connect { .. } | ApiError::Transport { .. } => (
            "network error".to_owned(),
            format!(
                "network/firewall: the connection to {key} failed or broke during the call; \
                 check the reach line above, firewalls and proxies between here and the gateway"
            ),
        ),
        ApiError::Business { code, .. } => (
            format!("{} answered with its own error code {code}", api.system()),
            format!(
                "this is {}'s error, not the gateway's: look code {code} up in its API \
                 documentation; bk.username (\"{}\") must exist there and may need permission",
                api.system(),
                cfg.bk.username
            ),
        ),
        ApiError::Decode { .. } | ApiError::Inconsistent { .. } => (
            format!("the answer is not what {perm} returns"),
            format!(
                "{key} answers, but not with this API: it probably points at another service \
                 or API version (a login page, the ESB instead of the gateway); compare with \
                 agentwatch.example.toml"
            ),
        ),
        ApiError::TooLarge { .. } => (
            "the answer is larger than allowed".to_owned(),
            format!("raise {prefix}.max_response_bytes"),
        ),
        ApiError::OverLimit { field, .. } => (
            "the answer announces more hosts than allowed".to_owned(),
            format!("raise {field} if the inventory really is that large"),
        ),
        ApiError::Build { .. } => (
            "the request could not be built".to_owned(),
            "check bk.app_code, bk.username and bk.tenant_id: they must fit in an HTTP header"
                .to_owned(),
        ),
    };
    (format!("{cause} ({e})"), fix)
}

fn not_found_fix(api: &Api, cfg: &Config) -> String {
    let base = &api.base_url;
    match api.kind {
        Kind::GseV2 => {
            let path = if base.ends_with("api/v2/") {
                String::new()
            } else {
                let guess = if base.contains("/api/bk-gse/") {
                    format!(" (here probably {base}api/v2/)")
                } else {
                    String::new()
                };
                format!(
                    "gse.base_url must end in api/v2/ — bk-monitor's BKAPP_BKGSE_APIGW_BASE_URL \
                     + /api/v2/, usually {{BK_COMPONENT_API_URL}}/api/bk-gse/prod/api/v2/{guess}; "
                )
            };
            let esb = if cfg.gse.esb_base_url.is_empty() {
                " with gse.esb_base_url = {BK_COMPONENT_API_URL}/api/c/compapi/v2/gse/"
            } else {
                ""
            };
            format!(
                "{path}if this BlueKing has only GSE 1.x (no bk-gse gateway, or \
                 cluster/list_agent_state not published), set gse.api = \"v1\" — or \"auto\" to \
                 try v2 first and fall back —{esb}"
            )
        }
        Kind::GseV1 => "gse.esb_base_url must be the ESB's GSE base ending in gse/, e.g. \
             {BK_COMPONENT_API_URL}/api/c/compapi/v2/gse/ (get_agent_status/ is appended); on \
             GSE 2.0 use gse.api = \"v2\" with gse.base_url = \
             {BK_COMPONENT_API_URL}/api/bk-gse/prod/api/v2/"
            .to_owned(),
        Kind::Nodeman => "nodeman.base_url should be {BK_COMPONENT_API_URL}/api/bk-nodeman/prod/ \
             (api/host/search/ is appended); multi-tenant gateways publish it under system/, so \
             .../api/bk-nodeman/prod/system/; through the ESB: \
             {BK_COMPONENT_API_URL}/api/c/compapi/v2/nodeman/"
            .to_owned(),
        Kind::Cmdb => format!(
            "the CMDB paths differ between BlueKing versions: check cmdb.base_url and try \
             cmdb.list_hosts_without_biz_path = \"api/v3/open/hosts/list_hosts_without_app\" \
             (bk-cli's) or, with cmdb.base_url = {{BK_COMPONENT_API_URL}}/api/c/compapi/v2/cc/, \
             \"list_hosts_without_biz/\" (ESB); now: {}",
            api.resource
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gse_v2(base: &str) -> Api {
        Api {
            kind: Kind::GseV2,
            check: "api gse list_agent_state",
            base_key: "gse.base_url",
            base_url: base.to_owned(),
            resource: "cluster/list_agent_state".to_owned(),
        }
    }

    fn http(status: u16, code: i64) -> ApiError {
        ApiError::Http {
            endpoint: "gse http://gw/x".into(),
            status,
            code: Some(code),
            message: "m".into(),
        }
    }

    fn cfg() -> Config {
        let mut c = Config::default();
        c.bk.app_code = "agentwatch".into();
        c
    }

    #[test]
    fn doctor_names_the_gateway_and_resource_to_request() {
        let api = gse_v2("http://bkapi.example.com/api/bk-gse/prod/api/v2/");
        assert_eq!(api.permission(), "bk-gse: cluster/list_agent_state");
        let esb = Api {
            kind: Kind::GseV1,
            base_url: "http://paas/api/c/compapi/v2/gse/".into(),
            resource: "get_agent_status/".into(),
            ..api.clone()
        };
        assert_eq!(esb.permission(), "ESB component gse.get_agent_status");
        let plain = gse_v2("http://gse.internal:8080/v2/");
        assert_eq!(plain.permission(), "bk-gse: cluster/list_agent_state");
    }

    #[test]
    fn doctor_maps_each_gateway_code_to_its_cause() {
        let cfg = cfg();
        let ctx = Ctx {
            cfg: &cfg,
            timeout: Duration::from_secs(5),
        };
        let api = gse_v2("http://gw/api/bk-gse/prod/api/v2/");
        let (d, f) = explain(&api, &ctx, &http(400, 1_640_001));
        assert!(
            d.starts_with("1640001") && f.contains("bk.app_code"),
            "{d} / {f}"
        );
        let (d, f) = explain(&api, &ctx, &http(403, 1_640_301));
        assert!(d.contains("no permission"), "{d}");
        assert!(f.contains("\"bk-gse: cluster/list_agent_state\""), "{f}");
        let (d, f) = explain(&api, &ctx, &http(403, 1_640_302));
        assert!(
            d.contains("not whitelisted") && f.contains("IP"),
            "{d} / {f}"
        );
        let (_, f) = explain(&api, &ctx, &http(404, 1_640_401));
        assert!(f.contains("gse.api = \"v1\""), "{f}");
        assert!(!f.contains("must end in api/v2/"), "the base is right: {f}");
        let (_, f) = explain(
            &gse_v2("http://gw/api/bk-gse/prod/"),
            &ctx,
            &http(404, 1_640_401),
        );
        assert!(f.contains("http://gw/api/bk-gse/prod/api/v2/"), "{f}");
        let limited = ApiError::RateLimited {
            endpoint: "gse http://gw/x".into(),
            retry_after: Some(Duration::from_secs(42)),
            code: Some(1_642_903),
            message: "slow down".into(),
        };
        let (d, f) = explain(&api, &ctx, &limited);
        assert!(d.contains("X-Bkapi-RateLimit-Reset: 42s"), "{d}");
        assert!(f.contains("gse.concurrency"), "{f}");
        let (d, _) = explain(&api, &ctx, &http(502, 1_650_200));
        assert!(d.contains("backend"), "{d}");
    }

    #[test]
    fn doctor_says_when_the_secret_is_the_example_value() {
        let mut cfg = cfg();
        cfg.bk.app_secret = Some(secrecy::SecretString::from("change-me".to_owned()));
        let ctx = Ctx {
            cfg: &cfg,
            timeout: Duration::from_secs(5),
        };
        let (_, f) = explain(&gse_v2("http://gw/"), &ctx, &http(400, 1_640_001));
        assert!(
            f.starts_with("the app secret is still an example value"),
            "{f}"
        );
        assert!(!f.contains("change-me"), "never prints the secret: {f}");
    }
}
