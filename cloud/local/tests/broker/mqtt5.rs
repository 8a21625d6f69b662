//! MQTT 5 against the broker with rumqttc's v5 client (and hand-made packets)
//! over mutual TLS: CONNACK properties, reason codes, properties passed
//! through, shared subscriptions, session expiry, topic aliases, subscription
//! options, and MQTT 3.1.1 and 5 clients talking to each other.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, Filter, Packet, PubAckReason, Publish, PublishProperties, RetainForwardRule,
    SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::{QoS, v5};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::common::{Device, TestCloud, WAIT};
use super::{connected, restricted_policy};

/// A v5 client whose event loop runs in a task, reporting every event.
struct Client5 {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn options5(cloud: &TestCloud, client_id: &str, device: &Device) -> MqttOptions {
    let (host, port) = cloud.mqtt_addr();
    let mut opts = MqttOptions::new(client_id, host, port);
    let tls = site_testkit::cloud::client_tls_config(cloud.ca_file(), device);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

impl Client5 {
    /// Connects; returns the client and the CONNACK, or the connection error.
    async fn connect(opts: MqttOptions) -> Result<(Client5, ConnAck), String> {
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(ev) => {
                        if tx.send(Ok(ev)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(describe(&e)));
                        return;
                    }
                }
            }
        });
        let mut c = Client5 { client, events, task };
        let ack = c.wait_for(WAIT, |ev| match ev {
            Event::Incoming(Packet::ConnAck(a)) => Some(a.clone()),
            _ => None,
        });
        let ack = ack.await?;
        Ok((c, ack))
    }

    /// Waits for the first event `pick` accepts; `Err` on a connection error or timeout.
    async fn wait_for<T>(&mut self, within: Duration, mut pick: impl FnMut(&Event) -> Option<T>) -> Result<T, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Err("timeout".into()),
                Ok(None) => return Err("event loop ended".into()),
                Ok(Some(Err(e))) => return Err(format!("connection error: {e}")),
                Ok(Some(Ok(ev))) => {
                    if let Some(t) = pick(&ev) {
                        return Ok(t);
                    }
                }
            }
        }
    }

    async fn recv(&mut self) -> Publish {
        self.wait_for(WAIT, |ev| match ev {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
        .expect("a PUBLISH")
    }

    async fn subscribe(&mut self, filters: Vec<Filter>) -> Vec<SubscribeReasonCode> {
        self.client.subscribe_many(filters).await.unwrap();
        self.wait_for(WAIT, |ev| match ev {
            Event::Incoming(Packet::SubAck(a)) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await
        .expect("a SUBACK")
    }

    async fn publish_acked(&mut self, topic: &str, payload: &str, props: Option<PublishProperties>) -> PubAckReason {
        match props {
            Some(p) => self.client.publish_with_properties(topic, QoS::AtLeastOnce, false, payload.to_owned(), p).await,
            None => self.client.publish(topic, QoS::AtLeastOnce, false, payload.to_owned()).await,
        }
        .unwrap();
        self.wait_for(WAIT, |ev| match ev {
            Event::Incoming(Packet::PubAck(a)) => Some(a.reason),
            _ => None,
        })
        .await
        .expect("a PUBACK")
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("refused {code:?}"),
        other => other.to_string(),
    }
}

fn filter(path: &str) -> Filter {
    Filter::new(path, QoS::AtLeastOnce)
}

#[tokio::test]
async fn mqtt5_connack_announces_iot_core_limits_and_features() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("v5-connack");
    let mut opts = options5(&cloud, "v5-connack", &dev);
    opts.set_keep_alive(Duration::from_secs(5)); // below IoT Core's 30 s minimum
    opts.set_session_expiry_interval(Some(30 * 24 * 3600)); // above the broker's maximum
    let (_c, ack) = Client5::connect(opts).await.unwrap();
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let p = ack.properties.expect("CONNACK properties");
    assert_eq!(p.max_qos, Some(1));
    assert_eq!(p.retain_available, Some(1));
    assert_eq!(p.receive_max, Some(100));
    assert_eq!(p.topic_alias_max, Some(8));
    assert_eq!(p.wildcard_subscription_available, Some(1));
    assert_eq!(p.shared_subscription_available, Some(1));
    assert_eq!(p.subscription_identifiers_available, Some(0));
    assert!(p.max_packet_size.is_some_and(|m| m > 128 * 1024));
    assert_eq!(p.server_keep_alive, Some(30), "keep-alive raised to IoT Core's minimum");
    assert_eq!(p.session_expiry_interval, Some(3600), "session expiry lowered to the broker's maximum");
}

#[tokio::test]
async fn an_empty_mqtt5_client_id_gets_an_assigned_one_that_the_policy_is_checked_on() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("v5-assigned");
    let (mut c, ack) = Client5::connect(options5(&cloud, "", &dev)).await.unwrap();
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let assigned = ack.properties.and_then(|p| p.assigned_client_identifier).expect("an assigned client id");
    assert!(!assigned.is_empty() && !assigned.starts_with('$'), "{assigned}");
    // The connection works under that id.
    assert_eq!(c.subscribe(vec![filter("v5/assigned")]).await, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    assert_eq!(c.publish_acked("v5/assigned", "hi", None).await, PubAckReason::Success);
    assert_eq!(c.recv().await.payload.as_ref(), b"hi");
    let (_again, ack) = Client5::connect(options5(&cloud, "", &dev)).await.unwrap();
    let other = ack.properties.and_then(|p| p.assigned_client_identifier).unwrap();
    assert_ne!(other, assigned, "each connection gets its own");

    // A policy that allows only named clients refuses an assigned one.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"iot:Connect","Resource":"{}"}}]}}"#,
        cloud.arn("client/named-*")
    );
    let named = cloud.device("v5-named-only", &policy);
    let refused = Client5::connect(options5(&cloud, "", &named)).await.err().unwrap();
    assert_eq!(refused, "connection error: refused NotAuthorized");
}

#[tokio::test]
async fn mqtt5_connect_refusals_carry_reason_codes() {
    let cloud = TestCloud::start().await;
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"iot:Connect","Resource":"{}"}}]}}"#,
        cloud.arn("client/allowed-*")
    );
    let dev = cloud.device("v5-connector", &policy);
    assert!(Client5::connect(options5(&cloud, "allowed-5", &dev)).await.is_ok());
    let refused = Client5::connect(options5(&cloud, "someone-else", &dev)).await.err().unwrap();
    assert_eq!(refused, "connection error: refused NotAuthorized");
    let refused = Client5::connect(options5(&cloud, "$reserved", &dev)).await.err().unwrap();
    assert_eq!(refused, "connection error: refused ClientIdentifierNotValid");
    let mut with_auth = options5(&cloud, "allowed-auth", &dev);
    with_auth.set_authentication_method(Some("SCRAM-SHA-1".into()));
    let refused = Client5::connect(with_auth).await.err().unwrap();
    assert_eq!(refused, "connection error: refused BadAuthenticationMethod");
}

#[tokio::test]
async fn mqtt5_properties_reach_mqtt5_subscribers_and_mqtt311_gets_topic_and_payload() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("v5-props");
    let (mut sub5, _) = Client5::connect(options5(&cloud, "props-sub5", &dev)).await.unwrap();
    let mut sub4 = connected(cloud.options("props-sub4", &dev)).await;
    let (mut publ, _) = Client5::connect(options5(&cloud, "props-pub", &dev)).await.unwrap();
    assert_eq!(sub5.subscribe(vec![filter("req/+")]).await, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    sub4.subscribe(&[("req/+", rumqttc::QoS::AtLeastOnce)]).await.unwrap();
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(600),
        response_topic: Some("resp/1".into()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    assert_eq!(publ.publish_acked("req/a", "{}", Some(props)).await, PubAckReason::Success);
    let got = sub5.recv().await;
    assert_eq!((&got.topic[..], &got.payload[..]), (&b"req/a"[..], &b"{}"[..]));
    let p = got.properties.expect("properties passed through");
    assert_eq!(p.payload_format_indicator, Some(1));
    assert!(p.message_expiry_interval.is_some_and(|s| (590..=600).contains(&s)), "{:?}", p.message_expiry_interval);
    assert_eq!(p.response_topic.as_deref(), Some("resp/1"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"\x01\x02"[..]));
    assert_eq!(p.user_properties, vec![("k".into(), "v".into()), ("k".into(), "w".into())]);
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    let got4 = sub4.recv(WAIT).await.unwrap();
    assert_eq!((got4.topic.as_str(), &got4.payload[..]), ("req/a", &b"{}"[..]));
}

#[tokio::test]
async fn mqtt311_and_mqtt5_clients_see_each_others_messages() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("mixed");
    let (mut c5, _) = Client5::connect(options5(&cloud, "mixed-5", &dev)).await.unwrap();
    let mut c4 = connected(cloud.options("mixed-4", &dev)).await;
    c5.subscribe(vec![filter("from/4")]).await;
    c4.subscribe(&[("from/5", rumqttc::QoS::AtLeastOnce)]).await.unwrap();
    c4.publish("from/4", rumqttc::QoS::AtLeastOnce, false, "hi5").await.unwrap();
    let got = c5.recv().await;
    assert_eq!((&got.payload[..], got.qos, got.properties), (&b"hi5"[..], QoS::AtLeastOnce, None));
    assert_eq!(c5.publish_acked("from/5", "hi4", None).await, PubAckReason::Success);
    let got = c4.recv(WAIT).await.unwrap();
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("from/5", &b"hi4"[..]));
}

#[tokio::test]
async fn shared_subscription_gives_each_message_to_one_member() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("shared");
    let (mut a, _) = Client5::connect(options5(&cloud, "shared-a", &dev)).await.unwrap();
    let mut b = connected(cloud.options("shared-b", &dev)).await; // 3.1.1 members too
    let (mut plain, _) = Client5::connect(options5(&cloud, "shared-plain", &dev)).await.unwrap();
    let (mut publ, _) = Client5::connect(options5(&cloud, "shared-pub", &dev)).await.unwrap();
    assert_eq!(
        a.subscribe(vec![filter("$share/workers/jobs/+")]).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    b.subscribe(&[("$share/workers/jobs/+", rumqttc::QoS::AtLeastOnce)]).await.unwrap();
    plain.subscribe(vec![filter("jobs/+")]).await;
    for i in 0..4 {
        assert_eq!(publ.publish_acked("jobs/x", &i.to_string(), None).await, PubAckReason::Success);
    }
    // The plain subscriber gets all four; the group four in total, two each (in turn).
    let mut all = Vec::new();
    for _ in 0..4 {
        all.push(plain.recv().await.payload);
    }
    assert_eq!(all.len(), 4);
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(a.recv().await.payload.to_vec());
        seen.push(b.recv(WAIT).await.unwrap().payload.to_vec());
    }
    seen.sort();
    assert_eq!(seen, vec![b"0".to_vec(), b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    assert!(
        a.wait_for(Duration::from_millis(300), |ev| matches!(ev, Event::Incoming(Packet::Publish(_))).then_some(()))
            .await
            .is_err(),
        "no duplicates"
    );
}

#[tokio::test]
async fn session_expiry_keeps_qos1_messages_for_a_clean_start_false_reconnect() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("v5-session");
    let opts = || {
        let mut o = options5(&cloud, "v5-session", &dev);
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(600));
        o
    };
    let (mut c, ack) = Client5::connect(opts()).await.unwrap();
    assert!(!ack.session_present);
    c.subscribe(vec![filter("away/+")]).await;
    c.client.disconnect().await.unwrap();
    c.wait_for(WAIT, |ev| matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)).then_some(())).await.unwrap();
    drop(c);
    let (mut publ, _) = Client5::connect(options5(&cloud, "v5-session-pub", &dev)).await.unwrap();
    assert_eq!(publ.publish_acked("away/1", "kept", None).await, PubAckReason::Success);
    let (mut c, ack) = Client5::connect(opts()).await.unwrap();
    assert!(ack.session_present);
    assert_eq!(&c.recv().await.payload[..], b"kept");
    // Session expiry 0 (the default): nothing survives.
    let mut gone = options5(&cloud, "v5-session", &dev);
    gone.set_clean_start(false);
    drop(c);
    let (_c, ack) = Client5::connect(gone.clone()).await.unwrap();
    assert!(ack.session_present, "still the 600 s session");
    drop(_c);
    let (_c, ack) = Client5::connect(gone).await.unwrap();
    assert!(!ack.session_present, "the previous connection asked for no expiry");
}

#[tokio::test]
async fn unauthorized_publish_gets_puback_0x87_and_subscribe_suback_0x87_in_mqtt5() {
    let cloud = TestCloud::start().await;
    let dev = cloud.device("v5-limited", &restricted_policy(&cloud));
    let (mut c, _) = Client5::connect(options5(&cloud, "v5-limited", &dev)).await.unwrap();
    assert_eq!(c.publish_acked("secret/x", "no", None).await, PubAckReason::NotAuthorized);
    assert_eq!(c.publish_acked("ok/fine", "yes", None).await, PubAckReason::Success, "still connected");
    let codes = c.subscribe(vec![filter("ok/a"), filter("secret/a"), filter("$aws/rules/r/x")]).await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::NotAuthorized,
            SubscribeReasonCode::TopicFilterInvalid
        ]
    );
}

#[tokio::test]
async fn no_local_and_retain_handling_subscription_options() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("v5-opts");
    let (mut c, _) = Client5::connect(options5(&cloud, "v5-opts", &dev)).await.unwrap();
    let mut no_local = filter("echo");
    no_local.nolocal = true;
    c.subscribe(vec![no_local, filter("probe")]).await;
    // Same client, same order: if the echo came back it would arrive before the probe.
    c.client.publish("echo", QoS::AtLeastOnce, false, "self").await.unwrap();
    c.client.publish("probe", QoS::AtLeastOnce, false, "probe").await.unwrap();
    assert_eq!(&c.recv().await.payload[..], b"probe");

    c.client.publish("cfg/r", QoS::AtLeastOnce, true, "retained").await.unwrap();
    c.wait_for(WAIT, |ev| matches!(ev, Event::Incoming(Packet::PubAck(_))).then_some(())).await.unwrap();
    let mut never = filter("cfg/r");
    never.retain_forward_rule = RetainForwardRule::Never;
    c.subscribe(vec![never]).await;
    let mut on_new = filter("cfg/r");
    on_new.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
    c.subscribe(vec![on_new]).await; // not new: still nothing
    c.client.publish("probe", QoS::AtLeastOnce, false, "probe2").await.unwrap();
    assert_eq!(&c.recv().await.payload[..], b"probe2", "no retained message before the probe");
    let mut every = filter("cfg/r");
    every.retain_forward_rule = RetainForwardRule::OnEverySubscribe;
    c.subscribe(vec![every]).await;
    let got = c.recv().await;
    assert_eq!((&got.payload[..], got.retain), (&b"retained"[..], true));
}

/// Reads packets from a raw stream until `pick` accepts one.
async fn read_until<T>(
    stream: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    mut pick: impl FnMut(Packet) -> Option<T>,
) -> T {
    loop {
        while let Ok(p) = Packet::read(buf, None) {
            if let Some(t) = pick(p) {
                return t;
            }
        }
        let n = tokio::time::timeout(WAIT, stream.read_buf(buf)).await.expect("in time").expect("read");
        assert!(n > 0, "closed");
    }
}

#[tokio::test]
async fn inbound_topic_aliases_are_resolved_and_bad_ones_disconnect_with_0x94() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("v5-alias");
    let (mut sub, _) = Client5::connect(options5(&cloud, "alias-sub", &dev)).await.unwrap();
    sub.subscribe(vec![filter("long/topic/name")]).await;
    let mut raw = cloud.raw_tls(&dev).await.unwrap();
    let mut out = BytesMut::new();
    let connect = v5::Connect { keep_alive: 60, client_id: "alias-pub".into(), clean_start: true, properties: None };
    Packet::Connect(connect, None, None).write(&mut out, None).unwrap();
    let alias = |a| PublishProperties { topic_alias: Some(a), ..Default::default() };
    Packet::Publish(Publish::new("long/topic/name", QoS::AtMostOnce, "first", Some(alias(1))))
        .write(&mut out, None)
        .unwrap();
    Packet::Publish(Publish::new("", QoS::AtMostOnce, "second", Some(alias(1)))).write(&mut out, None).unwrap();
    Packet::Publish(Publish::new("x", QoS::AtMostOnce, "bad", Some(alias(9)))).write(&mut out, None).unwrap();
    raw.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let code = read_until(&mut raw, &mut buf, |p| match p {
        Packet::Disconnect(d) => Some(d.reason_code),
        _ => None,
    })
    .await;
    assert_eq!(code, v5::DisconnectReasonCode::TopicAliasInvalid);
    assert_eq!(&sub.recv().await.payload[..], b"first");
    let second = sub.recv().await;
    assert_eq!((&second.topic[..], &second.payload[..]), (&b"long/topic/name"[..], &b"second"[..]));
}

#[tokio::test]
async fn a_second_mqtt5_connection_disconnects_the_first_with_session_taken_over() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("v5-dup");
    let (mut first, _) = Client5::connect(options5(&cloud, "v5-dup", &dev)).await.unwrap();
    let (_second, _) = Client5::connect(options5(&cloud, "v5-dup", &dev)).await.unwrap();
    let end = first.wait_for(WAIT, |_| None::<()>).await.unwrap_err();
    assert!(end.contains("SessionTakenOver"), "{end}");
}

#[tokio::test]
async fn qos2_publish_in_mqtt5_is_answered_with_disconnect_0x9b() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("v5-qos2");
    let (mut c, _) = Client5::connect(options5(&cloud, "v5-qos2", &dev)).await.unwrap();
    c.client.publish("a/b", QoS::ExactlyOnce, false, "x").await.unwrap();
    let end = c.wait_for(WAIT, |_| None::<()>).await.unwrap_err();
    assert!(end.contains("QoSNotSupported"), "{end}");
}

#[tokio::test]
async fn connect_for_a_version_above_5_gets_0x84() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("v6");
    let mut raw = cloud.raw_tls(&dev).await.unwrap();
    let mut connect = super::connect_packet("v6", true);
    connect[8] = 6; // protocol level
    raw.write_all(&connect).await.unwrap();
    let mut buf = BytesMut::new();
    let ack = read_until(&mut raw, &mut buf, |p| match p {
        Packet::ConnAck(a) => Some(a),
        _ => None,
    })
    .await;
    assert_eq!(ack.code, ConnectReturnCode::UnsupportedProtocolVersion);
}

#[tokio::test]
async fn disconnect_with_will_publishes_the_will_and_a_plain_one_does_not() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("v5-will");
    let (mut watcher, _) = Client5::connect(options5(&cloud, "will-watcher", &dev)).await.unwrap();
    watcher.subscribe(vec![filter("wills/+")]).await;
    for (client_id, reason) in [("will-plain", 0x00u8), ("will-sent", 0x04)] {
        let mut raw = cloud.raw_tls(&dev).await.unwrap();
        let mut out = BytesMut::new();
        let connect = v5::Connect { keep_alive: 60, client_id: client_id.into(), clean_start: true, properties: None };
        let will = v5::LastWill::new(format!("wills/{client_id}"), "gone", QoS::AtLeastOnce, false, None);
        Packet::Connect(connect, Some(will), None).write(&mut out, None).unwrap();
        out.extend_from_slice(&[0xE0, 0x01, reason]); // DISCONNECT: reason code, no properties
        raw.write_all(&out).await.unwrap();
        let mut buf = BytesMut::new();
        read_until(&mut raw, &mut buf, |p| matches!(p, Packet::ConnAck(_)).then_some(())).await;
        // The broker publishes a will before it lets the connection go.
        assert!(super::peer_closes(&mut raw, WAIT).await);
    }
    // Had the plain DISCONNECT published its will, it would have come first.
    let got = watcher.recv().await;
    assert_eq!((&got.topic[..], &got.payload[..]), (&b"wills/will-sent"[..], &b"gone"[..]));
}

#[tokio::test]
async fn mqtt5_clients_get_the_same_lifecycle_events() {
    let cloud = TestCloud::start().await;
    let mut obs = super::events::observer(&cloud, "ev5-observer").await;
    let dev = cloud.allow_all_device("ev5");
    let mut versions = Vec::new();
    for _ in 0..2 {
        let (mut c, _) = Client5::connect(options5(&cloud, "ev5", &dev)).await.expect("connects");
        c.subscribe(vec![filter("x/y")]).await;
        c.client.unsubscribe("x/y").await.unwrap();
        c.wait_for(WAIT, |ev| matches!(ev, Event::Incoming(Packet::UnsubAck(_))).then_some(())).await.unwrap();
        c.client.disconnect().await.unwrap();
        c.wait_for(WAIT, |ev| matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)).then_some(()))
            .await
            .unwrap();

        let mut kinds = Vec::new();
        let mut version = None;
        for _ in 0..4 {
            let (kind, v) = super::events::next_event(&mut obs, "ev5").await;
            if kind == "disconnected" {
                assert_eq!(v["disconnectReason"], "CLIENT_INITIATED_DISCONNECT");
                assert_eq!(v["clientInitiatedDisconnect"], true);
                assert_eq!(v["versionNumber"].as_u64(), version, "same version as connected");
            }
            if kind == "connected" {
                version = v["versionNumber"].as_u64();
            }
            if kind.ends_with("subscribed") {
                assert_eq!(v["topics"], serde_json::json!(["x/y"]));
            }
            kinds.push(kind);
        }
        assert_eq!(kinds, ["connected", "subscribed", "unsubscribed", "disconnected"]);
        versions.push(version.expect("a version"));
    }
    assert!(versions[1] > versions[0], "{versions:?}");
}
