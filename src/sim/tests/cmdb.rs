//! CMDB host listing answers like bk-cmdb does, from the same hosts NodeMan lists.

use serde_json::{json, Value};

use super::{small, start};
use crate::sim::{paths, OsType};

const FIELDS: [&str; 7] = [
    "bk_host_id",
    "bk_cloud_id",
    "bk_host_innerip",
    "bk_host_innerip_v6",
    "bk_agent_id",
    "bk_host_name",
    "bk_os_type",
];

fn list_body(start: i64, limit: i64) -> Value {
    json!({"bk_supplier_account": "0", "page": {"start": start, "limit": limit}, "fields": FIELDS})
}

fn host_ids(body: &Value) -> Vec<u64> {
    body["data"]["info"]
        .as_array()
        .expect("info")
        .iter()
        .map(|h| h["bk_host_id"].as_u64().expect("host id"))
        .collect()
}

#[tokio::test]
async fn listing_without_biz_pages_every_host_in_host_id_order() {
    let h = start(small(1234)).await;
    let mut seen = Vec::new();
    for start in (0..1234).step_by(500) {
        let (status, body) = h
            .call(paths::CMDB_LIST_HOSTS_WITHOUT_APP, list_body(start, 500))
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["result"], true);
        assert_eq!(body["data"]["count"], 1234);
        seen.extend(host_ids(&body));
    }
    let truth: Vec<u64> = h.sim.truth().iter().map(|a| a.host_id).collect();
    assert_eq!(seen, truth, "sorted by host id, no gaps, no repeats");
    assert_eq!(h.sim.request_counts().cmdb_list_hosts, 3);
}

#[tokio::test]
async fn hosts_carry_cmdb_types_and_match_the_truth() {
    let h = start(small(300)).await;
    let (_, body) = h
        .call(paths::CMDB_LIST_HOSTS_WITHOUT_APP, list_body(0, 500))
        .await;
    let info = body["data"]["info"].as_array().expect("info");
    for (item, agent) in info.iter().zip(h.sim.truth()) {
        assert_eq!(item["bk_host_id"], agent.host_id);
        assert_eq!(item["bk_cloud_id"], agent.cloud_id);
        assert_eq!(item["bk_host_innerip"], agent.ip.as_str(), "a string");
        assert_eq!(item["bk_host_innerip_v6"], agent.ipv6.as_str());
        let os = match agent.os_type {
            OsType::Linux => "1",
            OsType::Windows => "2",
        };
        assert_eq!(item["bk_os_type"], os, "CMDB's enum id, as a string");
        let bk_agent_id = if agent.legacy { "" } else { &agent.agent_id };
        assert_eq!(item["bk_agent_id"], bk_agent_id);
        assert!(item["bk_host_name"].is_string());
    }
}

#[tokio::test]
async fn only_the_requested_fields_are_returned() {
    let h = start(small(5)).await;
    let body = json!({"page": {"start": 0, "limit": 2}, "fields": ["bk_host_id", "bk_os_type"]});
    let (_, body) = h.call(paths::CMDB_LIST_HOSTS_WITHOUT_APP, body).await;
    let first = body["data"]["info"][0].as_object().expect("an object");
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["bk_host_id", "bk_os_type"]);
}

#[tokio::test]
async fn per_biz_listing_counts_and_pages_only_that_business() {
    let h = start(small(500)).await;
    let biz = h.sim.truth()[0].biz_id;
    let expected: Vec<u64> = h
        .sim
        .truth()
        .iter()
        .filter(|a| a.biz_id == biz)
        .map(|a| a.host_id)
        .collect();
    assert!(
        expected.len() > 3 && expected.len() < 500,
        "{}",
        expected.len()
    );

    let path = format!("/api/bk-cmdb/prod/api/v3/hosts/app/{biz}/list_hosts");
    let (_, body) = h.call(&path, list_body(0, 3)).await;
    assert_eq!(body["data"]["count"], expected.len());
    assert_eq!(host_ids(&body), expected[..3]);

    // ESB: the business is in the body.
    let mut esb = list_body(3, 500);
    esb["bk_biz_id"] = json!(biz);
    let (_, body) = h.call(paths::CMDB_ESB_LIST_BIZ_HOSTS, esb).await;
    assert_eq!(body["data"]["count"], expected.len());
    assert_eq!(host_ids(&body), expected[3..]);
}

#[tokio::test]
async fn the_gateway_path_names_the_business_not_the_body() {
    let h = start(small(200)).await;
    let biz = h.sim.truth()[0].biz_id;
    let mut body = list_body(0, 500);
    body["bk_biz_id"] = json!(biz + 1000);
    let path = format!("/api/bk-cmdb/prod/api/v3/hosts/app/{biz}/list_hosts");
    let (_, body) = h.call(&path, body).await;
    assert!(body["data"]["count"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_limit_above_500_is_rejected_naming_the_limit() {
    let h = start(small(10)).await;
    let (status, body) = h
        .call(paths::CMDB_LIST_HOSTS_WITHOUT_APP, list_body(0, 501))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], false);
    assert_eq!(body["code"], 1_199_059);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("page.limit 501"), "{message}");
    assert!(message.contains("500"), "{message}");
}

#[tokio::test]
async fn page_and_fields_are_required() {
    let h = start(small(10)).await;
    let cases = [
        (json!({"fields": FIELDS}), "'page'"),
        (
            json!({"page": {"start": 0}, "fields": FIELDS}),
            "'page.limit'",
        ),
        (
            json!({"page": {"start": 0, "limit": 0}, "fields": FIELDS}),
            "'page.limit'",
        ),
        (json!({"page": {"start": 0, "limit": 10}}), "'fields'"),
    ];
    for (request, named) in cases {
        let (_, body) = h.call(paths::CMDB_LIST_HOSTS_WITHOUT_APP, request).await;
        assert_eq!(body["result"], false);
        assert_eq!(body["code"], 1_199_010);
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(named), "{message}");
    }
    let bad_start = json!({"page": {"start": -1, "limit": 10}, "fields": FIELDS});
    let (_, body) = h.call(paths::CMDB_LIST_HOSTS_WITHOUT_APP, bad_start).await;
    assert_eq!(body["code"], 1_199_006);
    let (_, body) = h
        .call(paths::CMDB_ESB_LIST_BIZ_HOSTS, list_body(0, 10))
        .await;
    assert!(
        body["message"].as_str().unwrap().contains("'bk_biz_id'"),
        "{body}"
    );
}

#[tokio::test]
async fn cmdb_routes_require_app_credentials() {
    let h = start(small(10)).await;
    let response = h
        .client
        .post(h.url(paths::CMDB_LIST_HOSTS_WITHOUT_APP))
        .json(&list_body(0, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 1_640_001);
    assert_eq!(h.sim.stats().auth_failures.cmdb_list_hosts, 1);
}

#[tokio::test]
async fn a_scheduled_page_failure_hits_the_page_by_start_but_not_the_count_call() {
    let h = start(small(1200)).await;
    h.sim.fail_inventory_page(3, 1);
    let path = paths::CMDB_LIST_HOSTS_WITHOUT_APP;
    let (_, count) = h.call(path, list_body(0, 1)).await;
    assert_eq!(count["result"], true);
    let (_, second) = h.call(path, list_body(500, 500)).await;
    assert_eq!(second["result"], true);
    let (_, third) = h.call(path, list_body(1000, 500)).await;
    assert_eq!(third["result"], false);
    let (_, again) = h.call(path, list_body(1000, 500)).await;
    assert_eq!(again["result"], true, "only once");
}
