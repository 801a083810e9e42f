//! Plugins, agent info, IPv6-only hosts and the GSE 2.0 switch: over raw HTTP, and through
//! agentwatch's own clients so the simulator and the clients are proven to agree.

use std::collections::HashSet;

use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};

use super::{small, start, Harness};
use crate::metrics::Metrics;
use crate::sim::{paths, NewHost, SimConfig, PLUGIN_STATUSES};
use crate::sources::bk::BkConfig;
use crate::sources::gse::{GseClient, GseConfig, GseV1Client};
use crate::sources::nodeman::{NodemanClient, NodemanConfig};

fn bk() -> BkConfig {
    BkConfig {
        app_code: "agentwatch".into(),
        app_secret: Some(SecretString::from("sim-secret")),
        ..BkConfig::default()
    }
}

fn gse_config(h: &Harness) -> GseConfig {
    GseConfig {
        base_url: h.url(paths::GSE_V2_BASE),
        esb_base_url: format!("{}gse/", h.url(paths::ESB_BASE)),
        ..GseConfig::default()
    }
}

fn nodeman(h: &Harness, page_size: usize) -> NodemanClient {
    let cfg = NodemanConfig {
        base_url: h.url(paths::NODEMAN_BASE),
        page_size,
        ..NodemanConfig::default()
    };
    NodemanClient::new(&cfg, &bk(), Metrics::new()).expect("nodeman client")
}

async fn plugin_page(h: &Harness, page: i64, pagesize: i64) -> Value {
    let body = json!({"page": page, "pagesize": pagesize, "detail": true});
    let (status, body) = h.call(paths::NODEMAN_PLUGIN_SEARCH, body).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], true, "{body}");
    body
}

fn item_for(body: &Value, host_id: u64) -> Value {
    body["data"]["list"]
        .as_array()
        .and_then(|l| l.iter().find(|i| i["bk_host_id"] == host_id))
        .cloned()
        .unwrap_or_else(|| panic!("host {host_id} listed"))
}

#[tokio::test]
async fn plugin_search_pages_like_host_search_and_lists_each_hosts_plugins() {
    let h = start(small(250)).await;
    let truth = h.sim.truth();
    let mut seen = Vec::new();
    for page in 1..=3 {
        let body = plugin_page(&h, page, 100).await;
        assert_eq!(body["data"]["total"], 250);
        for item in body["data"]["list"].as_array().expect("list") {
            let host_id = item["bk_host_id"].as_u64().expect("host id");
            seen.push(host_id);
            let agent = truth.iter().find(|a| a.host_id == host_id).expect("known");
            for field in ["inner_ip", "bk_agent_id", "status", "node_type", "cpu_arch"] {
                assert!(item.get(field).is_some(), "item has {field}");
            }
            let plugins: Vec<Value> = agent
                .plugins
                .iter()
                .map(|p| {
                    json!({"name": p.name, "status": p.status, "version": p.version,
                        "host_id": host_id})
                })
                .collect();
            assert_eq!(item["plugin_status"], json!(plugins), "host {host_id}");
        }
    }
    assert_eq!(seen, (1..=250).collect::<Vec<u64>>());

    // The generated population looks like a real one.
    let with_plugins = truth.iter().filter(|a| !a.plugins.is_empty()).count();
    assert!((150..250).contains(&with_plugins), "{with_plugins}");
    let all: Vec<_> = truth.iter().flat_map(|a| &a.plugins).collect();
    let running = all.iter().filter(|p| p.status == "RUNNING").count();
    assert!(running * 10 > all.len() * 8, "{running} of {}", all.len());
    assert!(all
        .iter()
        .all(|p| PLUGIN_STATUSES.contains(&p.status.as_str())));
    let names: HashSet<&str> = all.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        HashSet::from(["bkmonitorbeat", "bkunifylogbeat", "processbeat"])
    );
    assert_eq!(h.sim.request_counts().nodeman_plugin_search, 3);
}

#[tokio::test]
async fn plugin_changes_through_the_control_api_show_in_plugin_search() {
    let h = start(small(20)).await;
    let agent = h.sim.truth()[4].clone();
    let path = format!("/_sim/agents/{}/plugins/bkmonitorbeat", agent.agent_id);
    let (status, body) = h
        .control(
            Method::PUT,
            &path,
            Some(json!({"status": "TERMINATED", "version": "3.50.0"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let item = item_for(&plugin_page(&h, 1, -1).await, agent.host_id);
    let beat = item["plugin_status"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == "bkmonitorbeat"))
        .cloned()
        .expect("installed");
    assert_eq!(
        (beat["status"].clone(), beat["version"].clone()),
        (json!("TERMINATED"), json!("3.50.0"))
    );

    let (status, _) = h
        .control(Method::PUT, &path, Some(json!({"status": "SLEEPING"})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = h
        .control(
            Method::PUT,
            "/_sim/agents/ghost/plugins/bkmonitorbeat",
            Some(json!({"status": "RUNNING"})),
        )
        .await;
    assert_eq!(status, 404);

    assert_eq!(h.control(Method::DELETE, &path, None).await.0, 204);
    assert_eq!(h.control(Method::DELETE, &path, None).await.0, 404);
    let item = item_for(&plugin_page(&h, 1, -1).await, agent.host_id);
    assert!(item["plugin_status"]
        .as_array()
        .expect("list")
        .iter()
        .all(|p| p["name"] != "bkmonitorbeat"));

    assert!(h
        .sim
        .set_plugin_status(&agent.agent_id, "processbeat", "UNREGISTER"));
    assert!(!h.sim.set_plugin_status(&agent.agent_id, "processbeat", "x"));
    assert!(!h.sim.set_plugin_status("ghost", "processbeat", "RUNNING"));
    let plugins = h.sim.agent(&agent.agent_id).expect("agent").plugins;
    assert!(plugins
        .iter()
        .any(|p| p.name == "processbeat" && p.status == "UNREGISTER"));
}

#[tokio::test]
async fn the_plugin_client_reads_every_host_once_from_the_simulator() {
    let h = start(small(1234)).await;
    h.sim
        .set_plugin_status(&h.sim.truth()[10].agent_id, "bkunifylogbeat", "TERMINATED");
    let got = nodeman(&h, 100)
        .search_plugins(&["bkunifylogbeat".to_owned()])
        .await
        .expect("plugin search");
    assert_eq!(got.len(), 1234);
    for (host, agent) in got.iter().zip(h.sim.truth()) {
        assert_eq!(host.host_id as u64, agent.host_id);
        let want: Vec<(&str, &str)> = agent
            .plugins
            .iter()
            .filter(|p| p.name == "bkunifylogbeat")
            .map(|p| (p.status.as_str(), p.version.as_str()))
            .collect();
        let have: Vec<(&str, &str)> = host
            .plugins
            .iter()
            .map(|p| (p.status.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(have, want);
    }
    assert_eq!(got[10].plugins[0].status, "TERMINATED");
}

#[tokio::test]
async fn list_agent_info_reports_parent_and_start_time_with_fresh_readings() {
    let h = start(small(30)).await;
    let truth = h.sim.truth();
    let ids: Vec<&str> = truth.iter().map(|a| a.agent_id.as_str()).collect();
    let call = || h.call(paths::GSE_LIST_AGENT_INFO, json!({ "agent_id_list": ids }));
    let (status, first) = call().await;
    assert_eq!(status, 200);
    let (_, second) = call().await;
    let (first, second) = (
        first["data"].as_array().expect("array").clone(),
        second["data"].as_array().expect("array").clone(),
    );
    assert_eq!(first.len(), 30);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    for (item, agent) in first.iter().zip(&truth) {
        assert_eq!(item["code"], 0);
        assert_eq!(item["bk_agent_id"], agent.agent_id);
        assert_eq!(item["parent_ip"], agent.parent_ip);
        assert_eq!(item["parent_port"], 28668);
        assert_eq!(item["start_time"], agent.start_time, "seconds");
        assert_eq!(item["version"], agent.version);
        let report = item["report_time"].as_i64().expect("ms");
        assert!((now_ms - 10_000..=now_ms).contains(&report), "{report}");
        let cpu = item["cpu_rate"].as_f64().expect("cpu");
        assert!((0.0..100.0).contains(&cpu));
    }
    let moved = first
        .iter()
        .zip(&second)
        .filter(|(a, b)| a["cpu_rate"] != b["cpu_rate"] || a["mem_rate"] != b["mem_rate"])
        .count();
    assert!(moved > 20, "usage changes between requests ({moved} of 30)");
    assert!(first
        .iter()
        .zip(&second)
        .all(|(a, b)| a["start_time"] == b["start_time"] && a["parent_ip"] == b["parent_ip"]));

    // An unknown id gets an error item; all unknown is 1011003, like list_agent_state.
    let (_, body) = h
        .call(
            paths::GSE_LIST_AGENT_INFO,
            json!({"agent_id_list": [ids[0], "ghost"]}),
        )
        .await;
    assert_eq!(body["data"][1]["bk_agent_id"], "ghost");
    assert_ne!(body["data"][1]["code"], 0);
    let (_, body) = h
        .call(
            paths::GSE_LIST_AGENT_INFO,
            json!({"agent_id_list": ["ghost"]}),
        )
        .await;
    assert_eq!(body["code"], 1_011_003);
    assert_eq!(h.sim.request_counts().gse_list_agent_info, 4);
}

#[tokio::test]
async fn restarts_and_parent_moves_show_in_both_info_apis_through_the_clients() {
    let h = start(SimConfig {
        agents: 40,
        legacy_ratio: 0.5,
        ..SimConfig::default()
    })
    .await;
    let agent = h.sim.truth()[3].clone();
    let before = agent.start_time;
    let path = format!("/_sim/agents/{}/restart", agent.agent_id);
    let (status, body) = h.control(Method::POST, &path, None).await;
    assert_eq!(status, 200);
    assert!(body["start_time"].as_i64().expect("start") > before);
    let (status, _) = h
        .control(
            Method::PUT,
            &format!("/_sim/agents/{}", agent.agent_id),
            Some(json!({"parent_ip": "10.9.9.9"})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(!h.sim.restart_agent("ghost"));
    assert!(!h.sim.set_parent_ip("ghost", "10.0.0.1"));
    let now = h.sim.agent(&agent.agent_id).expect("agent");

    let cfg = gse_config(&h);
    let v2 = GseClient::new(&cfg, &bk(), Metrics::new()).expect("v2 client");
    let info = v2
        .list_agent_info(&[agent.agent_id.as_str().into(), "ghost".into()])
        .await
        .expect("list_agent_info");
    assert_eq!(info.len(), 1, "the unknown id is skipped");
    assert_eq!(info[0].parent_ip, "10.9.9.9");
    assert_eq!(info[0].parent_port, 28668);
    assert_eq!(info[0].start_time_ms, now.start_time * 1000);

    let v1 = GseV1Client::new(&cfg, &bk(), Metrics::new()).expect("v1 client");
    let info = v1
        .get_agent_info(&[(agent.cloud_id, agent.ip.clone()), (0, "192.0.2.1".into())])
        .await
        .expect("get_agent_info");
    assert_eq!(info.len(), 1);
    assert_eq!(
        (
            info[0].cloud_id,
            info[0].ip.as_str(),
            info[0].parent_ip.as_str()
        ),
        (agent.cloud_id, agent.ip.as_str(), "10.9.9.9")
    );
    assert_eq!(info[0].version, agent.version);
    assert_eq!(h.sim.request_counts().gse_get_agent_info, 1);
}

#[tokio::test]
async fn get_agent_info_is_keyed_by_cloud_ip() {
    let h = start(small(10)).await;
    let agent = h.sim.truth()[0].clone();
    let hosts = json!({"bk_supplier_account": "0",
        "hosts": [{"ip": agent.ip, "bk_cloud_id": agent.cloud_id}, {"ip": "::1", "bk_cloud_id": 0}]});
    let (status, body) = h.call(paths::GSE_GET_AGENT_INFO, hosts).await;
    assert_eq!(status, 200);
    let key = format!("{}:{}", agent.cloud_id, agent.ip);
    assert_eq!(
        body["data"],
        json!({ key: {"ip": agent.ip, "version": agent.version, "bk_cloud_id": agent.cloud_id,
            "parent_ip": agent.parent_ip, "parent_port": 28668} })
    );
}

#[tokio::test]
async fn with_gse_2_disabled_every_v2_path_is_the_gateway_404() {
    let h = start(SimConfig {
        agents: 10,
        gse_v2: false,
        ..SimConfig::default()
    })
    .await;
    let id = h.sim.truth()[0].agent_id.clone();
    for path in [
        paths::GSE_LIST_AGENT_STATE,
        paths::GSE_LIST_AGENT_INFO,
        "/api/bk-gse/prod/api/v2/cluster/list_agent_state/",
    ] {
        let (status, body) = h.call(path, json!({ "agent_id_list": [id] })).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["result"], false);
        assert_eq!(body["code"], 1_640_401);
        assert_eq!(body["code_name"], "API_NOT_FOUND");
    }
    // GSE 1.x still answers, and the v2 client sees the 404 the "auto" fallback looks for.
    let agent = h.sim.truth()[0].clone();
    let (_, body) = h
        .call(
            paths::GSE_GET_AGENT_STATUS,
            json!({"hosts": [{"ip": agent.ip, "bk_cloud_id": agent.cloud_id}]}),
        )
        .await;
    assert_eq!(body["result"], true);
    let v2 = GseClient::new(&gse_config(&h), &bk(), Metrics::new()).expect("client");
    let err = v2
        .list_agent_state(&[id.as_str().into()])
        .await
        .unwrap_err();
    assert_eq!(err.business_code(), Some(1_640_401), "{err}");

    let (status, body) = h
        .control(Method::PUT, "/_sim/gse_v2", Some(json!({"enabled": true})))
        .await;
    assert_eq!((status, body["enabled"].clone()), (200, json!(true)));
    assert_eq!(h.list_agent_state(&[&id]).await["result"], true);
    h.sim.set_gse_v2_enabled(false);
    assert!(!h.sim.gse_v2_enabled());
    let (status, _) = h
        .call(paths::GSE_LIST_AGENT_STATE, json!({"agent_id_list": [id]}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn ipv6_only_hosts_are_listed_without_ipv4_and_omitted_from_gse_1x_answers() {
    let h = start(SimConfig {
        agents: 200,
        ipv6_only_ratio: 0.3,
        legacy_ratio: 0.3,
        ..SimConfig::default()
    })
    .await;
    let truth = h.sim.truth();
    let v6: Vec<_> = truth.iter().filter(|a| a.ip.is_empty()).collect();
    assert!((30..100).contains(&v6.len()), "{}", v6.len());
    for a in &v6 {
        assert!(!a.ipv6.is_empty() && !a.legacy, "{a:?}");
    }
    let v4 = truth
        .iter()
        .find(|a| !a.ip.is_empty())
        .expect("an IPv4 host");

    let inventory = h.host_page(1, -1).await;
    let item = item_for(&inventory, v6[0].host_id);
    assert_eq!(
        (item["inner_ip"].clone(), item["inner_ipv6"].clone()),
        (json!(""), json!(v6[0].ipv6))
    );
    assert_eq!(item["bk_agent_id"], v6[0].agent_id);
    // GSE 2.0 knows it by agent id.
    let state = h.list_agent_state(&[&v6[0].agent_id]).await;
    assert_eq!(state["data"][0]["bk_agent_id"], v6[0].agent_id);

    let hosts = json!({"hosts": [
        {"ip": v6[0].ipv6, "bk_cloud_id": v6[0].cloud_id},
        {"ip": "", "bk_cloud_id": v6[1].cloud_id},
        {"ip": v4.ip, "bk_cloud_id": v4.cloud_id},
    ]});
    for path in [paths::GSE_GET_AGENT_STATUS, paths::GSE_GET_AGENT_INFO] {
        let (_, body) = h.call(path, hosts.clone()).await;
        let keys: Vec<&String> = body["data"].as_object().expect("object").keys().collect();
        assert_eq!(keys, [&format!("{}:{}", v4.cloud_id, v4.ip)], "{path}");
    }
    let v1 = GseV1Client::new(&gse_config(&h), &bk(), Metrics::new()).expect("client");
    let got = v1
        .get_agent_status(&[(v6[0].cloud_id, v6[0].ipv6.clone())])
        .await
        .expect("status");
    assert!(got.is_empty());
}

#[tokio::test]
async fn ipv6_only_hosts_can_be_added_but_not_as_legacy_or_with_ipv4() {
    let h = start(small(5)).await;
    let id = h.sim.add_host(NewHost {
        ipv6_only: Some(true),
        ..NewHost::default()
    });
    let agent = h.sim.agent(&id).expect("added");
    assert!(
        agent.ip.is_empty() && agent.ipv6.starts_with("fd00::"),
        "{agent:?}"
    );
    assert!(!agent.legacy);
    let (status, body) = h
        .control(
            Method::POST,
            "/_sim/hosts",
            Some(json!({"ipv6_only": true, "ipv6": "2001:db8::7", "bk_agent_id": ""})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = h
        .control(
            Method::POST,
            "/_sim/hosts",
            Some(json!({"ipv6_only": true, "ip": "10.1.1.1"})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = h
        .control(
            Method::POST,
            "/_sim/hosts",
            Some(json!({"ipv6_only": true, "ipv6": "2001:db8::7",
                "plugins": [{"name": "bkmonitorbeat", "status": "RUNNING", "version": "3.1"}]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["ipv6"], "2001:db8::7");
    assert_eq!(body["plugins"][0]["version"], "3.1");
}
