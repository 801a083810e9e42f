//! Injected faults look like the real failures, and only where they were asked for.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::{auth_value, small, start, Harness};
use crate::sim::{paths, Endpoint, FaultConfig, FaultKind};

async fn raw_state_call(h: &Harness) -> reqwest::Response {
    let id = h.sim.truth()[0].agent_id.clone();
    h.client
        .post(h.url(paths::GSE_LIST_AGENT_STATE))
        .header("X-Bkapi-Authorization", auth_value())
        .json(&json!({"agent_id_list": [id]}))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn a_fault_rate_of_one_with_a_single_kind_always_yields_that_kind() {
    let h = start(small(20)).await;
    for kind in FaultKind::ALL.into_iter().filter(|k| *k != FaultKind::Slow) {
        h.sim.set_faults(FaultConfig::only(kind, 1.0));
        for _ in 0..3 {
            let response = raw_state_call(&h).await;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.expect("body");
            let json: Option<Value> = serde_json::from_slice(&bytes).ok();
            match kind {
                FaultKind::ServerError => assert!(status == 500 && json.is_none()),
                FaultKind::BadGateway => {
                    assert_eq!(
                        (status, json.map(|j| j["code"].clone())),
                        (502, Some(json!(1_650_200)))
                    );
                }
                FaultKind::RateLimited => {
                    assert_eq!(status, 429);
                    assert_eq!(headers["retry-after"], "1");
                    assert_eq!(headers["x-bkapi-ratelimit-reset"], "1");
                    assert_eq!(json.map(|j| j["code"].clone()), Some(json!(1_642_903)));
                }
                FaultKind::Malformed => assert!(status == 200 && json.is_none()),
                FaultKind::Truncated => {
                    assert!(status == 200 && json.is_none());
                    assert!(bytes.starts_with(br#"{"result":true"#), "a valid prefix");
                }
                FaultKind::NoPermission => {
                    let j = json.expect("envelope");
                    assert_eq!(
                        (status, j["result"].clone(), j["code"].clone()),
                        (200, json!(false), json!(1_640_301))
                    );
                }
                FaultKind::BackendError => {
                    let j = json.expect("envelope");
                    assert_eq!((status, j["result"].clone()), (200, json!(false)));
                    assert_ne!(j["code"], 1_011_003, "1011003 is data, never a fault");
                }
                FaultKind::Slow => unreachable!(),
            }
        }
        assert_eq!(h.sim.stats().faults[&kind], 3, "{kind:?} counted");
    }
}

#[tokio::test]
async fn a_slow_fault_outlasts_the_client_timeout() {
    let h = start(small(5)).await;
    h.sim.set_faults(FaultConfig::only(FaultKind::Slow, 1.0));
    let started = Instant::now();
    let result = h
        .client
        .post(h.url(paths::GSE_LIST_AGENT_STATE))
        .header("X-Bkapi-Authorization", auth_value())
        .json(&json!({"agent_id_list": []}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(result.expect_err("must time out").is_timeout());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn shutdown_cuts_a_slow_fault_short() {
    let mut h = start(small(5)).await;
    h.sim.set_faults(FaultConfig::only(FaultKind::Slow, 1.0));
    let request = h
        .client
        .post(h.url(paths::GSE_LIST_AGENT_STATE))
        .header("X-Bkapi-Authorization", auth_value())
        .json(&json!({"agent_id_list": []}))
        .send();
    let pending = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    h.shutdown.cancel();
    let task = h.task.take().expect("serve task");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns promptly")
        .expect("serve task joined")
        .expect("serve ok");
    let response = pending
        .await
        .expect("joined")
        .expect("answered after the cut");
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn faults_hit_only_the_selected_endpoints_and_never_the_control_api() {
    let h = start(small(10)).await;
    let config = FaultConfig {
        rate: 1.0,
        kinds: vec![FaultKind::ServerError],
        endpoints: vec![Endpoint::NodemanHostSearch],
        ..FaultConfig::default()
    };
    h.sim.set_faults(config);
    assert_eq!(raw_state_call(&h).await.status(), 200);
    let response = h
        .client
        .post(h.url(paths::NODEMAN_HOST_SEARCH))
        .header("X-Bkapi-Authorization", auth_value())
        .json(&json!({"page": 1, "pagesize": 10}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 500);
    assert_eq!(h.control(Method::GET, "/_sim/agents", None).await.0, 200);
    let stats = h.sim.stats();
    assert_eq!(
        (
            stats.faulted.nodeman_host_search,
            stats.faulted.gse_list_agent_state
        ),
        (1, 0)
    );
}

#[tokio::test]
async fn faults_are_configurable_over_http_with_all_as_a_word() {
    let h = start(small(10)).await;
    let body =
        json!({"rate": 1.0, "kinds": ["bad_gateway"], "endpoints": "all", "slow_delay": "2s"});
    let (status, echoed) = h.control(Method::PUT, "/_sim/faults", Some(body)).await;
    assert_eq!(status, 200);
    assert_eq!(echoed["slow_delay"], "2s");
    assert_eq!(raw_state_call(&h).await.status(), 502);
    let (status, _) = h
        .control(Method::PUT, "/_sim/faults", Some(json!({"rate": 2.0})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = h
        .control(
            Method::PUT,
            "/_sim/faults",
            Some(json!({"kinds": ["agent_not_found"]})),
        )
        .await;
    assert_eq!(status, 400, "1011003 is not a fault kind");
    h.sim.set_fault_rate(0.0);
    assert_eq!(raw_state_call(&h).await.status(), 200);
}

#[tokio::test]
async fn a_failing_inventory_page_fails_only_that_page_the_given_number_of_times() {
    let h = start(small(30)).await;
    h.sim.fail_inventory_page(2, 2);
    assert_eq!(h.host_page(1, 10).await["result"], true);
    for _ in 0..2 {
        let body = h.host_page(2, 10).await;
        assert_eq!(body["result"], false);
    }
    assert_eq!(h.host_page(2, 10).await["result"], true);
    assert_eq!(h.sim.stats().inventory_page_failures, 2);

    let (status, _) = h
        .control(
            Method::POST,
            "/_sim/inventory/fail_page",
            Some(json!({"page": 3, "times": 1, "kind": "server_error"})),
        )
        .await;
    assert_eq!(status, 200);
    let response = h
        .client
        .post(h.url(paths::NODEMAN_HOST_SEARCH))
        .header("X-Bkapi-Authorization", auth_value())
        .json(&json!({"page": 3, "pagesize": 10}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 500);
}

#[tokio::test]
async fn latency_delays_every_polling_response() {
    let cfg = crate::sim::SimConfig {
        agents: 5,
        latency: Duration::from_millis(150),
        ..small(5)
    };
    let h = start(cfg).await;
    let started = Instant::now();
    h.list_agent_state(&[]).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    let started = Instant::now();
    h.control(Method::GET, "/_sim/stats", None).await;
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "the control API is not delayed"
    );
}

#[tokio::test]
async fn a_gateway_error_answers_every_request_on_its_endpoint_until_cleared() {
    use crate::sim::GatewayError;
    let h = start(small(5)).await;
    let cases = [
        (GatewayError::InvalidArgs, 400, 1_640_001),
        (GatewayError::NoPermission, 403, 1_640_301),
        (GatewayError::IpNotAllowed, 403, 1_640_302),
        (GatewayError::ApiNotFound, 404, 1_640_401),
        (GatewayError::RateLimited { reset_secs: 42 }, 429, 1_642_903),
    ];
    for (error, status, code) in cases {
        h.sim
            .set_gateway_error(Endpoint::GseListAgentState, Some(error));
        for _ in 0..2 {
            let response = raw_state_call(&h).await;
            assert_eq!(response.status().as_u16(), status, "{error:?}");
            if status == 429 {
                assert_eq!(response.headers()["x-bkapi-ratelimit-reset"], "42");
            }
            let j: Value = response.json().await.expect("gateway envelope");
            assert_eq!(
                (j["result"].clone(), j["code"].clone()),
                (json!(false), json!(code))
            );
        }
        // Other endpoints answer normally.
        assert_eq!(h.host_page(1, 1).await["result"], true);
    }
    // The control API sets and clears it too.
    let (status, body) = h
        .control(
            Method::PUT,
            "/_sim/gateway_errors",
            Some(json!({"endpoint": "gse_list_agent_state", "error": null})),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(raw_state_call(&h).await.status(), 200);
    let (status, body) = h
        .control(
            Method::PUT,
            "/_sim/gateway_errors",
            Some(json!({"endpoint": "nodeman_host_search", "error": "ip_not_allowed"})),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"nodeman_host_search": "ip_not_allowed"}))
    );
}
