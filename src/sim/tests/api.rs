//! The polling endpoints answer like BlueKing does.

use serde_json::{json, Value};

use super::{auth_value, small, start};
use crate::sim::{paths, SimConfig, MAX_IDS_PER_CALL};

#[tokio::test]
async fn paging_covers_every_host_exactly_once() {
    let h = start(small(1234)).await;
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let body = h.host_page(page, 100).await;
        assert_eq!(body["result"], true);
        assert_eq!(body["code"], 0);
        assert_eq!(body["data"]["total"], 1234);
        let list = body["data"]["list"].as_array().expect("list").clone();
        if list.is_empty() {
            break;
        }
        seen.extend(
            list.iter()
                .map(|item| item["bk_host_id"].as_u64().expect("host id")),
        );
        page += 1;
    }
    assert_eq!(page, 14, "13 pages of up to 100, then an empty one");
    let expected: Vec<u64> = h.sim.truth().iter().map(|a| a.host_id).collect();
    assert_eq!(seen, expected, "sorted by host id, no gaps, no repeats");
}

#[tokio::test]
async fn pagesize_minus_one_returns_the_whole_inventory() {
    let h = start(small(321)).await;
    let body = h.host_page(1, -1).await;
    assert_eq!(body["data"]["list"].as_array().map(Vec::len), Some(321));
}

#[tokio::test]
async fn host_search_defaults_to_page_one_of_ten() {
    let h = start(small(50)).await;
    let (_, body) = h.call(paths::NODEMAN_HOST_SEARCH, json!({})).await;
    let list = body["data"]["list"].as_array().expect("list");
    assert_eq!(list.len(), 10);
    assert_eq!(list[0]["bk_host_id"], 1);
    for field in [
        "bk_biz_id",
        "bk_agent_id",
        "bk_cloud_id",
        "inner_ip",
        "inner_ipv6",
        "bk_host_name",
        "os_type",
        "status",
        "status_display",
        "version",
        "bk_cloud_name",
        "bk_biz_name",
    ] {
        assert!(list[0].get(field).is_some(), "item has {field}");
    }
}

#[tokio::test]
async fn legacy_hosts_are_listed_without_agent_id_and_known_to_gse_as_cloud_ip() {
    let h = start(SimConfig {
        agents: 200,
        legacy_ratio: 0.5,
        ..SimConfig::default()
    })
    .await;
    let truth = h.sim.truth();
    let legacy: Vec<_> = truth.iter().filter(|a| a.legacy).collect();
    assert!(
        legacy.len() > 50,
        "about half are legacy, got {}",
        legacy.len()
    );
    for agent in &legacy {
        assert_eq!(agent.agent_id, format!("{}:{}", agent.cloud_id, agent.ip));
    }
    let inventory = h.host_page(1, -1).await;
    for item in inventory["data"]["list"].as_array().expect("list") {
        let host_id = item["bk_host_id"].as_u64().expect("host id");
        let agent = truth
            .iter()
            .find(|a| a.host_id == host_id)
            .expect("known host");
        let expected = if agent.legacy {
            ""
        } else {
            agent.agent_id.as_str()
        };
        assert_eq!(item["bk_agent_id"], expected);
    }
    let ids: Vec<&str> = legacy.iter().map(|a| a.agent_id.as_str()).collect();
    let body = h.list_agent_state(&ids).await;
    let data = body["data"].as_array().expect("array");
    assert_eq!(data.len(), ids.len());
    assert_eq!(data[0]["bk_agent_id"], ids[0]);
}

#[tokio::test]
async fn a_gse_2_agent_is_not_known_by_its_address() {
    let h = start(SimConfig {
        agents: 20,
        legacy_ratio: 0.0,
        ..SimConfig::default()
    })
    .await;
    let agent = &h.sim.truth()[0];
    let body = h
        .list_agent_state(&[&format!("{}:{}", agent.cloud_id, agent.ip)])
        .await;
    assert_eq!(body["code"], 1_011_003);
}

#[tokio::test]
async fn list_agent_state_omits_unknown_ids_and_reports_known_ones() {
    let h = start(small(100)).await;
    let truth = h.sim.truth();
    let ids = [
        truth[3].agent_id.as_str(),
        "no-such-agent",
        truth[7].agent_id.as_str(),
    ];
    let body = h.list_agent_state(&ids).await;
    assert_eq!(body["result"], true);
    let data = body["data"].as_array().expect("array");
    assert_eq!(data.len(), 2);
    for (item, agent) in data.iter().zip([&truth[3], &truth[7]]) {
        assert_eq!(item["bk_agent_id"], agent.agent_id);
        assert_eq!(item["bk_cloud_id"], agent.cloud_id);
        assert_eq!(item["status_code"], agent.status_code);
        assert_eq!(item["version"], agent.version);
        assert_eq!(item["run_mode"], agent.run_mode);
    }
}

#[tokio::test]
async fn code_1011003_comes_only_when_no_id_is_known() {
    let h = start(small(10)).await;
    let body = h.list_agent_state(&["ghost-1", "ghost-2"]).await;
    assert_eq!(body["result"], false);
    assert_eq!(body["code"], 1_011_003);
    assert_eq!(body["data"], Value::Null);

    let known = h.sim.truth()[0].agent_id.clone();
    let body = h.list_agent_state(&["ghost-1", &known]).await;
    assert_eq!(body["code"], 0);

    let body = h.list_agent_state(&[]).await;
    assert_eq!(body["result"], true);
    assert_eq!(body["data"], json!([]));
}

#[tokio::test]
async fn hosts_gse_does_not_know_are_not_installed_in_nodeman_and_absent_from_gse() {
    let h = start(SimConfig {
        agents: 300,
        gse_unknown_ratio: 0.2,
        ..SimConfig::default()
    })
    .await;
    let unknown: Vec<_> = h.sim.truth().into_iter().filter(|a| !a.in_gse).collect();
    assert!(!unknown.is_empty());
    let ids: Vec<&str> = unknown.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(h.list_agent_state(&ids).await["code"], 1_011_003);
    let inventory = h.host_page(1, -1).await;
    let item = inventory["data"]["list"]
        .as_array()
        .and_then(|l| l.iter().find(|i| i["bk_host_id"] == unknown[0].host_id))
        .cloned()
        .expect("still in the inventory");
    assert_eq!(item["status"], "NOT_INSTALLED");
}

#[tokio::test]
async fn more_than_the_limit_of_ids_is_a_business_error_naming_the_limit() {
    let h = start(small(10)).await;
    let ids: Vec<String> = (0..=MAX_IDS_PER_CALL).map(|i| format!("id-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let body = h.list_agent_state(&refs).await;
    assert_eq!(body["result"], false);
    assert_ne!(body["code"], 1_011_003);
    assert!(body["message"]
        .as_str()
        .unwrap_or_default()
        .contains("5000"));
}

#[tokio::test]
async fn get_agent_status_is_keyed_by_cloud_ip_with_alive_as_zero_or_one() {
    let h = start(small(60)).await;
    let truth = h.sim.truth();
    let running = truth
        .iter()
        .find(|a| a.status_code == 2)
        .expect("a running agent");
    h.sim.set_status(&truth[1].agent_id, 3);
    let down = &truth[1];
    let hosts = json!([
        {"ip": running.ip, "bk_cloud_id": running.cloud_id},
        {"ip": down.ip, "bk_cloud_id": down.cloud_id},
        {"ip": "192.0.2.1", "bk_cloud_id": 0},
        {"ip": "::1", "bk_cloud_id": "0"},
    ]);
    let (status, body) = h
        .call(
            paths::GSE_GET_AGENT_STATUS,
            json!({"bk_supplier_account": "0", "hosts": hosts}),
        )
        .await;
    assert_eq!(status, 200);
    let data = body["data"].as_object().expect("object");
    assert_eq!(data.len(), 2, "unknown hosts are omitted");
    let key = format!("{}:{}", running.cloud_id, running.ip);
    assert_eq!(
        data[&key],
        json!({"ip": running.ip, "bk_cloud_id": running.cloud_id, "bk_agent_alive": 1})
    );
    assert_eq!(
        data[&format!("{}:{}", down.cloud_id, down.ip)]["bk_agent_alive"],
        0
    );
}

#[tokio::test]
async fn both_slash_variants_of_the_gse_paths_are_served() {
    let h = start(small(5)).await;
    let id = h.sim.truth()[0].agent_id.clone();
    let with_slash = format!("{}/", paths::GSE_LIST_AGENT_STATE);
    let (_, body) = h.call(&with_slash, json!({"agent_id_list": [id]})).await;
    assert_eq!(body["code"], 0);
    let without = paths::GSE_GET_AGENT_STATUS.trim_end_matches('/');
    let (_, body) = h.call(without, json!({"hosts": []})).await;
    assert_eq!(body["data"], json!({}));
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_gateway_code_1640001() {
    let h = start(small(5)).await;
    let wrong = json!({"bk_app_code": "agentwatch", "bk_app_secret": "nope"}).to_string();
    for header in [None, Some("not json".to_owned()), Some(wrong)] {
        let mut request = h
            .client
            .post(h.url(paths::GSE_LIST_AGENT_STATE))
            .json(&json!({"agent_id_list": []}));
        if let Some(value) = header {
            request = request.header("X-Bkapi-Authorization", value);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["result"], false);
        assert_eq!(body["code"], 1_640_001);
        assert_eq!(body["code_name"], "INVALID_ARGS");
        assert_eq!(body["data"], Value::Null);
    }
    assert_eq!(h.sim.stats().auth_failures.gse_list_agent_state, 3);
}

#[tokio::test]
async fn esb_route_also_accepts_credentials_in_the_body() {
    let h = start(small(5)).await;
    let body = json!({"bk_app_code": "agentwatch", "bk_app_secret": "sim-secret", "hosts": []});
    let response = h
        .client
        .post(h.url(paths::GSE_GET_AGENT_STATUS))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn bad_request_bodies_get_an_error_envelope_not_a_crash() {
    let h = start(small(5)).await;
    for path in [
        paths::NODEMAN_HOST_SEARCH,
        paths::GSE_LIST_AGENT_STATE,
        paths::GSE_GET_AGENT_STATUS,
    ] {
        for raw in [
            "{",
            "[1,2]",
            r#"{"agent_id_list": [1], "hosts": 3, "page": "x"}"#,
        ] {
            let response = h
                .client
                .post(h.url(path))
                .header("X-Bkapi-Authorization", auth_value())
                .body(raw)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 200, "{path} {raw}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["result"], false, "{path} {raw}");
        }
    }
    let (_, body) = h.call(paths::NODEMAN_HOST_SEARCH, json!({"page": 0})).await;
    assert_eq!(body["result"], false);
}

#[tokio::test]
async fn unknown_paths_get_the_gateway_404() {
    let h = start(small(5)).await;
    let response = h
        .client
        .get(h.url(paths::GSE_LIST_AGENT_STATE))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    let (status, body) = h
        .call("/api/bk-gse/prod/api/v2/cluster/nope", json!({}))
        .await;
    assert_eq!((status, body["code"].clone()), (404, json!(1_640_401)));
}

#[tokio::test]
async fn request_counts_follow_each_endpoint() {
    let h = start(small(5)).await;
    h.host_page(1, 10).await;
    h.list_agent_state(&["x"]).await;
    h.list_agent_state(&["y"]).await;
    let counts = h.sim.request_counts();
    assert_eq!(
        (counts.nodeman_host_search, counts.gse_list_agent_state),
        (1, 2)
    );
    assert_eq!(counts.gse_get_agent_status, 0);
    assert_eq!(h.sim.stats().ids_requested, 2);
}
