//! Lifecycle events ("Lifecycle events" in the AWS IoT Core Developer Guide)
//! seen by an observer subscribed to `$aws/events/#`: presence and
//! subscription events for MQTT 3.1.1 and MQTT 5 clients, and the
//! disconnect reasons of a taken-over client id and a revoked certificate.

use local_cloud::registry::CertificateStatus;
use rumqttc::QoS;
use serde_json::Value;

use super::common::{Client, TestCloud, WAIT};
use super::connected;

/// An MQTT 3.1.1 client subscribed to every event topic.
pub(crate) async fn observer(cloud: &TestCloud, name: &str) -> Client {
    let dev = cloud.allow_all_device(name);
    let mut obs = connected(cloud.options(name, &dev)).await;
    let granted = obs.subscribe(&[("$aws/events/#", QoS::AtLeastOnce)]).await.unwrap();
    assert_eq!(granted, vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    obs
}

/// The next event about `client_id` (events about others are skipped): its kind
/// (`connected`, `subscribed`, …) and payload.
pub(crate) async fn next_event(obs: &mut Client, client_id: &str) -> (String, Value) {
    let suffix = format!("/{client_id}");
    loop {
        let p = obs.recv(WAIT).await.unwrap_or_else(|e| panic!("an event about {client_id}: {e}"));
        if !p.topic.ends_with(&suffix) || !p.topic.starts_with("$aws/events/") {
            continue;
        }
        let v: Value = serde_json::from_slice(&p.payload).expect("JSON event");
        let kind = p.topic.trim_end_matches(&suffix).rsplit('/').next().unwrap_or_default().to_owned();
        assert_eq!(v["eventType"], kind.as_str(), "eventType matches the topic {}", p.topic);
        assert_eq!(v["clientId"], client_id);
        return (kind, v);
    }
}

#[tokio::test]
async fn a_311_client_is_seen_connecting_subscribing_unsubscribing_and_leaving() {
    let cloud = TestCloud::start().await;
    let mut obs = observer(&cloud, "ev-observer").await;
    let dev = cloud.allow_all_device("ev-v4");
    let mut versions = Vec::new();
    for _ in 0..2 {
        let mut c = connected(cloud.options("ev-v4", &dev)).await;
        c.subscribe(&[("a/b", QoS::AtLeastOnce), ("c/#", QoS::AtMostOnce)]).await.unwrap();
        c.client.unsubscribe("a/b").await.unwrap();
        c.wait_for(WAIT, |ev| matches!(ev, rumqttc::Event::Incoming(rumqttc::Incoming::UnsubAck(_))).then_some(()))
            .await
            .unwrap();
        c.disconnect().await;

        let (kind, on) = next_event(&mut obs, "ev-v4").await;
        assert_eq!(kind, "connected");
        assert_eq!(on["principalIdentifier"], dev.certificate_id.as_str());
        assert_eq!(on["ipAddress"], "127.0.0.1");
        assert!(on["sessionIdentifier"].as_str().is_some_and(|s| !s.is_empty()));
        let (kind, sub) = next_event(&mut obs, "ev-v4").await;
        assert_eq!(kind, "subscribed");
        assert_eq!(sub["topics"], serde_json::json!(["a/b", "c/#"]));
        let (kind, unsub) = next_event(&mut obs, "ev-v4").await;
        assert_eq!(kind, "unsubscribed");
        assert_eq!(unsub["topics"], serde_json::json!(["a/b"]));
        let (kind, off) = next_event(&mut obs, "ev-v4").await;
        assert_eq!(kind, "disconnected");
        assert_eq!(off["disconnectReason"], "CLIENT_INITIATED_DISCONNECT");
        assert_eq!(off["clientInitiatedDisconnect"], true);
        assert_eq!(off["versionNumber"], on["versionNumber"], "connect and disconnect share the version");
        assert_eq!(off["sessionIdentifier"], on["sessionIdentifier"]);
        versions.push(on["versionNumber"].as_u64().expect("a number"));
    }
    assert!(versions[1] > versions[0], "versionNumber increases per connection: {versions:?}");
}

#[tokio::test]
async fn a_second_connection_with_the_client_id_ends_the_first_as_duplicate_clientid() {
    let cloud = TestCloud::start().await;
    let mut obs = observer(&cloud, "ev-dup-observer").await;
    let dev = cloud.allow_all_device("ev-dup");
    let mut first = connected(cloud.options("ev-dup", &dev)).await;
    let (_, on1) = next_event(&mut obs, "ev-dup").await;
    let _second = connected(cloud.options("ev-dup", &dev)).await;
    assert!(first.closed_within(WAIT).await);
    let (kind, off) = next_event(&mut obs, "ev-dup").await;
    assert_eq!(kind, "disconnected");
    assert_eq!(off["disconnectReason"], "DUPLICATE_CLIENTID");
    assert_eq!(off["clientInitiatedDisconnect"], false);
    assert_eq!(off["versionNumber"], on1["versionNumber"]);
    let (kind, on2) = next_event(&mut obs, "ev-dup").await;
    assert_eq!(kind, "connected");
    assert!(on2["versionNumber"].as_u64() > on1["versionNumber"].as_u64());
}

#[tokio::test]
async fn a_revoked_certificate_ends_the_connection_with_auth_error() {
    let cloud = TestCloud::start().await;
    let mut obs = observer(&cloud, "ev-rev-observer").await;
    let dev = cloud.allow_all_device("ev-rev");
    let mut c = connected(cloud.options("ev-rev", &dev)).await;
    assert_eq!(next_event(&mut obs, "ev-rev").await.0, "connected");
    cloud.registry().update_certificate(&dev.certificate_id, CertificateStatus::Revoked).unwrap();
    assert!(c.closed_within(WAIT).await);
    let (kind, off) = next_event(&mut obs, "ev-rev").await;
    assert_eq!(kind, "disconnected");
    assert_eq!(off["disconnectReason"], "AUTH_ERROR");
}

#[tokio::test]
async fn event_topics_need_subscribe_and_receive_permission() {
    let cloud = TestCloud::start().await;
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"iot:Connect","Resource":"*"},
        {"Effect":"Allow","Action":"iot:Subscribe","Resource":"*"}]}"#;
    let watcher = cloud.device("ev-noreceive", policy);
    let mut w = connected(cloud.options("ev-noreceive", &watcher)).await;
    w.subscribe(&[("$aws/events/#", QoS::AtLeastOnce)]).await.unwrap();
    let mut obs = observer(&cloud, "ev-perm-observer").await;
    let dev = cloud.allow_all_device("ev-perm");
    let _c = connected(cloud.options("ev-perm", &dev)).await;
    // The allowed observer sees the event; the one without iot:Receive does not.
    assert_eq!(next_event(&mut obs, "ev-perm").await.0, "connected");
    assert!(w.recv(std::time::Duration::from_millis(300)).await.is_err(), "no iot:Receive, no event");
}

/// Takes 45 s: IoT Core's shortest keep-alive is 30 s and the broker waits 1.5 × that.
#[tokio::test]
async fn a_silent_client_ends_with_mqtt_keep_alive_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cloud = TestCloud::start().await;
    let mut obs = observer(&cloud, "ev-ka-observer").await;
    let dev = cloud.allow_all_device("ev-silent");
    let mut raw = cloud.raw_tls(&dev).await.unwrap();
    raw.write_all(&super::common::connect_packet("ev-silent", true)).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, raw.read_exact(&mut connack)).await.expect("CONNACK in time").unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    assert_eq!(next_event(&mut obs, "ev-silent").await.0, "connected");
    // Nothing more is sent on `raw`: after 45 s of silence the broker gives up.
    let off = loop {
        let p = obs.recv(std::time::Duration::from_secs(60)).await.expect("the disconnect event");
        if p.topic == "$aws/events/presence/disconnected/ev-silent" {
            break serde_json::from_slice::<Value>(&p.payload).unwrap();
        }
    };
    assert_eq!(off["disconnectReason"], "MQTT_KEEP_ALIVE_TIMEOUT");
    assert_eq!(off["clientInitiatedDisconnect"], false);
    drop(raw);
}
