//! The control API and its in-process twin change what every endpoint reports.

use reqwest::Method;
use serde_json::json;

use super::{small, start};
use crate::sim::{paths, NewHost, SimConfig};

#[tokio::test]
async fn a_status_change_over_http_is_visible_to_gse_nodeman_and_gse_1x() {
    let h = start(SimConfig {
        agents: 50,
        legacy_ratio: 1.0,
        ..SimConfig::default()
    })
    .await;
    let agent = h.sim.truth()[0].clone();
    assert!(agent.agent_id.contains(':'));
    // Raw ':' and a percent-encoded one must both reach the same agent.
    let raw = format!("/_sim/agents/{}", agent.agent_id);
    let (status, body) = h
        .control(Method::PUT, &raw, Some(json!({"status_code": 3})))
        .await;
    assert_eq!((status, body["status_code"].clone()), (200, json!(3)));
    let encoded = format!("/_sim/agents/{}", agent.agent_id.replace(':', "%3A"));
    let (status, _) = h
        .control(Method::PUT, &encoded, Some(json!({"version": "9.9.9"})))
        .await;
    assert_eq!(status, 200);

    let state = h.list_agent_state(&[&agent.agent_id]).await;
    assert_eq!(state["data"][0]["status_code"], 3);
    assert_eq!(state["data"][0]["version"], "9.9.9");
    let hosts = json!({"hosts": [{"ip": agent.ip, "bk_cloud_id": agent.cloud_id}]});
    let (_, v1) = h.call(paths::GSE_GET_AGENT_STATUS, hosts).await;
    assert_eq!(v1["data"][&agent.agent_id]["bk_agent_alive"], 0);
    let inventory = h.host_page(1, 1).await;
    assert_eq!(inventory["data"]["list"][0]["status"], "TERMINATED");
}

#[tokio::test]
async fn unknown_agents_get_404_from_the_control_api_and_false_in_process() {
    let h = start(small(5)).await;
    let (status, body) = h
        .control(
            Method::PUT,
            "/_sim/agents/ghost",
            Some(json!({"status_code": 2})),
        )
        .await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
    assert_eq!(
        h.control(Method::DELETE, "/_sim/agents/ghost", None)
            .await
            .0,
        404
    );
    assert_eq!(
        h.control(Method::POST, "/_sim/agents/ghost/forget", None)
            .await
            .0,
        404
    );
    assert!(!h.sim.set_status("ghost", 2));
    assert!(!h.sim.set_version("ghost", "1"));
    assert!(!h.sim.remove_host("ghost"));
    assert!(!h.sim.forget_in_gse("ghost"));
}

#[tokio::test]
async fn a_bad_update_body_is_rejected() {
    let h = start(small(5)).await;
    let path = format!("/_sim/agents/{}", h.sim.truth()[0].agent_id);
    let (status, _) = h
        .control(Method::PUT, &path, Some(json!({"status": "up"})))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_removed_host_leaves_the_inventory_and_gse() {
    let h = start(small(30)).await;
    let agent = h.sim.truth()[4].clone();
    let path = format!("/_sim/agents/{}", agent.agent_id);
    assert_eq!(h.control(Method::DELETE, &path, None).await.0, 204);
    assert_eq!(
        h.list_agent_state(&[&agent.agent_id]).await["code"],
        1_011_003
    );
    let inventory = h.host_page(1, -1).await;
    assert_eq!(inventory["data"]["total"], 29);
    let list = inventory["data"]["list"].as_array().expect("list");
    assert!(list.iter().all(|i| i["bk_host_id"] != agent.host_id));
}

#[tokio::test]
async fn a_forgotten_agent_stays_in_the_inventory_but_gse_no_longer_knows_it() {
    let h = start(small(30)).await;
    let agent = h.sim.truth()[2].clone();
    let (status, body) = h
        .control(
            Method::POST,
            &format!("/_sim/agents/{}/forget", agent.agent_id),
            None,
        )
        .await;
    assert_eq!((status, body["in_gse"].clone()), (200, json!(false)));
    assert_eq!(
        h.list_agent_state(&[&agent.agent_id]).await["code"],
        1_011_003
    );
    let page = h.host_page(3, 1).await;
    assert_eq!(page["data"]["list"][0]["status"], "NOT_INSTALLED");
    assert!(h.sim.remember_in_gse(&agent.agent_id));
    assert_eq!(h.list_agent_state(&[&agent.agent_id]).await["code"], 0);
}

#[tokio::test]
async fn an_added_host_gets_an_id_and_shows_up_everywhere() {
    let h = start(small(10)).await;
    let (status, body) = h
        .control(
            Method::POST,
            "/_sim/hosts",
            Some(json!({"biz_id": 7, "status_code": 4})),
        )
        .await;
    assert_eq!(status, 201);
    let id = body["agent_id"].as_str().expect("agent id").to_owned();
    assert_eq!(body["host_id"], 11);
    let state = h.list_agent_state(&[&id]).await;
    assert_eq!(state["data"][0]["status_code"], 4);
    assert_eq!(h.host_page(2, 10).await["data"]["list"][0]["bk_biz_id"], 7);

    let legacy = h.sim.add_host(NewHost {
        bk_agent_id: Some(String::new()),
        cloud_id: Some(2),
        ..NewHost::default()
    });
    assert!(legacy.starts_with("2:"));
    let ip = legacy.trim_start_matches("2:").to_owned();
    let (status, _) = h
        .control(
            Method::POST,
            "/_sim/hosts",
            Some(json!({"cloud_id": 2, "ip": ip})),
        )
        .await;
    assert_eq!(status, 409, "address already taken");
    let (status, _) = h
        .control(
            Method::POST,
            "/_sim/hosts",
            Some(json!({"bk_agent_id": "a:b"})),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_truth_list_over_http_matches_the_in_process_one() {
    let h = start(small(25)).await;
    let (status, body) = h.control(Method::GET, "/_sim/agents", None).await;
    assert_eq!(status, 200);
    let expected = serde_json::to_value(h.sim.truth()).expect("serialize");
    assert_eq!(body, expected);
    let (_, stats) = h.control(Method::GET, "/_sim/stats", None).await;
    assert_eq!(stats["agents"], 25);
    assert_eq!(stats["faults"]["slow"], 0);
}

#[tokio::test]
async fn flapping_toggles_the_configured_share_of_agents() {
    let h = start(SimConfig {
        agents: 400,
        flap_rate: 0.05,
        ..SimConfig::default()
    })
    .await;
    let before = h.sim.truth();
    let (_, body) = h.control(Method::POST, "/_sim/flap", None).await;
    assert_eq!(body["toggled"], 20);
    let after = h.sim.truth();
    let changed = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.status_code != b.status_code)
        .count();
    assert_eq!(changed, 20);
    for (a, b) in before.iter().zip(&after) {
        if a.status_code != b.status_code {
            assert!(
                (a.status_code == 2) != (b.status_code == 2),
                "running toggles to down and back"
            );
        }
    }
}

#[tokio::test]
async fn a_flap_request_may_name_its_own_share_and_a_bad_one_is_refused() {
    let h = start(SimConfig {
        agents: 400,
        flap_rate: 0.05,
        ..SimConfig::default()
    })
    .await;
    let before = h.sim.truth();
    let (status, body) = h
        .control(Method::POST, "/_sim/flap", Some(json!({ "rate": 1.0 })))
        .await;
    assert_eq!((status, body["toggled"].as_u64()), (200, Some(400)));
    let after = h.sim.truth();
    assert!(before
        .iter()
        .zip(&after)
        .all(|(a, b)| (a.status_code == 2) != (b.status_code == 2)));
    for bad in [
        json!({ "rate": 1.5 }),
        json!({ "rate": -0.1 }),
        json!({ "rate": "1" }),
    ] {
        let (status, body) = h.control(Method::POST, "/_sim/flap", Some(bad)).await;
        assert_eq!(status, 400);
        assert!(body.to_string().contains("rate"), "{body}");
    }
    let (status, _) = h
        .control(Method::POST, "/_sim/flap", Some(json!({ "share": 1.0 })))
        .await;
    assert_eq!(status, 400);
    assert_eq!(h.sim.truth(), after, "refused requests change nothing");
}

#[tokio::test]
async fn the_flapper_runs_every_interval_while_serving() {
    let cfg = SimConfig {
        agents: 100,
        flap_rate: 0.1,
        flap_interval: std::time::Duration::from_millis(50),
        ..SimConfig::default()
    };
    let h = start(cfg).await;
    let before: Vec<i32> = h.sim.truth().iter().map(|a| a.status_code).collect();
    tokio::time::sleep(std::time::Duration::from_millis(180)).await;
    let after: Vec<i32> = h.sim.truth().iter().map(|a| a.status_code).collect();
    assert_ne!(before, after);
}
