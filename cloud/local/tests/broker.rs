//! The MQTT broker against a real rumqttc client (and hand-made packets) over
//! mutual TLS on loopback: IoT Core's authentication, authorization, limits,
//! QoS, sessions, retained messages, last will, and the `AWS/IoT` metrics it counts. MQTT 5 is in `mqtt5`,
//! lifecycle events in `events`.

mod common;
#[path = "broker/events.rs"]
mod events;
#[path = "broker/mqtt5.rs"]
mod mqtt5;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{ALLOW_ALL, Client, StandaloneBroker, TestCloud, WAIT, connect_packet};
use local_cloud::broker::BrokerConfig;
use local_cloud::bus::{BusMessage, Publisher, ServiceHandler};
use local_cloud::registry::CertificateStatus;
use rumqttc::{ConnectReturnCode, ConnectionError, LastWill, QoS, SubscribeReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OK1: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtLeastOnce);

async fn connected(opts: rumqttc::MqttOptions) -> Client {
    Client::connect(opts).await.expect("connects").0
}

fn refused_with(r: common::ConnectResult) -> Option<ConnectReturnCode> {
    match r {
        Err(ConnectionError::ConnectionRefused(code)) => Some(code),
        _ => None,
    }
}

/// Reads until EOF or error; true if the peer closed within `within`.
async fn peer_closes(stream: &mut (impl AsyncReadExt + Unpin), within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads exactly `n` bytes (with a deadline).
async fn read_n(stream: &mut (impl AsyncReadExt + Unpin), n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf)).await.expect("in time").expect("read");
    buf
}

#[tokio::test]
async fn authorized_clients_publish_subscribe_and_receive() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("pubsub");
    let mut sub = connected(cloud.options("pubsub-sub", &dev)).await;
    let mut publ = connected(cloud.options("pubsub-pub", &dev)).await;
    assert_eq!(sub.subscribe(&[("dt/+/telemetry", QoS::AtLeastOnce)]).await.unwrap(), vec![OK1]);
    publ.publish("dt/pump1/telemetry", QoS::AtLeastOnce, false, "hello").await.unwrap();
    let p = sub.recv(WAIT).await.unwrap();
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.retain),
        ("dt/pump1/telemetry", &b"hello"[..], QoS::AtLeastOnce, false)
    );
    publ.publish("dt/pump1/telemetry", QoS::AtMostOnce, false, "q0").await.unwrap();
    let p = sub.recv(WAIT).await.unwrap();
    assert_eq!((&p.payload[..], p.qos), (&b"q0"[..], QoS::AtMostOnce));
}

#[tokio::test]
async fn connect_needs_iot_connect_on_the_client_id() {
    let cloud = TestCloud::start().await;
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"iot:Connect","Resource":"{}"}}]}}"#,
        cloud.arn("client/allowed-*")
    );
    let dev = cloud.device("connector", &policy);
    assert!(Client::connect(cloud.options("allowed-1", &dev)).await.is_ok());
    let refused = Client::connect(cloud.options("someone-else", &dev)).await;
    assert_eq!(refused_with(refused), Some(ConnectReturnCode::NotAuthorized));
}

fn restricted_policy(cloud: &TestCloud) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}},
            {{"Effect":"Allow","Action":"iot:Publish","Resource":"{pub_}"}},
            {{"Effect":"Allow","Action":"iot:Subscribe","Resource":"{sub}"}},
            {{"Effect":"Allow","Action":"iot:Receive","Resource":"{recv}"}}]}}"#,
        pub_ = cloud.arn("topic/ok/*"),
        sub = cloud.arn("topicfilter/ok/*"),
        recv = cloud.arn("topic/ok/visible"),
    )
}

#[tokio::test]
async fn unauthorized_subscribe_gets_0x80_for_that_filter_only() {
    let cloud = TestCloud::start().await;
    let dev = cloud.device("limited-sub", &restricted_policy(&cloud));
    let mut c = connected(cloud.options("limited-sub", &dev)).await;
    let codes = c.subscribe(&[("ok/a", QoS::AtLeastOnce), ("secret/a", QoS::AtLeastOnce)]).await.unwrap();
    assert_eq!(codes, vec![OK1, SubscribeReasonCode::Failure]);
}

#[tokio::test]
async fn unauthorized_publish_closes_the_connection() {
    let cloud = TestCloud::start().await;
    let dev = cloud.device("limited-pub", &restricted_policy(&cloud));
    let mut c = connected(cloud.options("limited-pub", &dev)).await;
    c.publish("ok/fine", QoS::AtLeastOnce, false, "x").await.unwrap();
    c.client.publish("secret/x", QoS::AtLeastOnce, false, "x").await.unwrap();
    assert!(c.closed_within(WAIT).await);
}

#[tokio::test]
async fn messages_the_receiver_may_not_receive_are_not_delivered() {
    let cloud = TestCloud::start().await;
    let limited = cloud.device("limited-recv", &restricted_policy(&cloud));
    let open = cloud.allow_all_device("open-pub");
    let mut sub = connected(cloud.options("limited-recv", &limited)).await;
    let mut publ = connected(cloud.options("open-pub", &open)).await;
    assert_eq!(sub.subscribe(&[("ok/#", QoS::AtLeastOnce)]).await.unwrap(), vec![OK1]);
    // Same publisher, same subscriber: order is kept, so if the hidden message
    // were delivered it would arrive before the visible one.
    publ.publish("ok/hidden", QoS::AtLeastOnce, false, "no").await.unwrap();
    publ.publish("ok/visible", QoS::AtLeastOnce, false, "yes").await.unwrap();
    let p = sub.recv(WAIT).await.unwrap();
    assert_eq!(p.topic, "ok/visible");
}

#[tokio::test]
async fn qos2_publish_is_refused_by_closing_the_connection() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("qos2-pub");
    let mut c = connected(cloud.options("qos2-pub", &dev)).await;
    c.client.publish("a/b", QoS::ExactlyOnce, false, "x").await.unwrap();
    let got =
        c.wait_for(WAIT, |ev| matches!(ev, rumqttc::Event::Incoming(rumqttc::Incoming::PubRec(_))).then_some(())).await;
    assert!(got.unwrap_err().starts_with("connection error"), "no PUBREC; connection closed");
}

#[tokio::test]
async fn qos2_subscribe_is_refused_by_closing_the_connection() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("qos2-sub");
    let mut c = connected(cloud.options("qos2-sub", &dev)).await;
    let r = c.subscribe(&[("a/b", QoS::ExactlyOnce)]).await;
    assert!(r.unwrap_err().starts_with("connection error"), "no SUBACK, connection closed");
}

#[tokio::test]
async fn payload_over_128_kib_closes_the_connection() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("big");
    let mut c = connected(cloud.options("big", &dev)).await;
    c.publish("big/ok", QoS::AtLeastOnce, false, vec![0u8; 128 * 1024]).await.expect("exactly 128 KiB is accepted");
    c.client.publish("big/no", QoS::AtLeastOnce, false, vec![0u8; 128 * 1024 + 1]).await.unwrap();
    assert!(c.closed_within(WAIT).await);
}

#[tokio::test]
async fn topic_with_more_than_7_slashes_closes_the_connection() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("deep");
    let mut c = connected(cloud.options("deep", &dev)).await;
    c.publish("a/b/c/d/e/f/g/h", QoS::AtLeastOnce, false, "7 slashes").await.expect("7 slashes are fine");
    c.client.publish("a/b/c/d/e/f/g/h/i", QoS::AtLeastOnce, false, "8 slashes").await.unwrap();
    assert!(c.closed_within(WAIT).await);
}

#[tokio::test]
async fn more_than_8_filters_in_one_subscribe_closes_the_connection() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("manyfilters");
    let mut c = connected(cloud.options("manyfilters", &dev)).await;
    let names: Vec<String> = (0..9).map(|i| format!("f/{i}")).collect();
    let filters: Vec<(&str, QoS)> = names.iter().map(|n| (n.as_str(), QoS::AtMostOnce)).collect();
    assert!(c.subscribe(&filters[..8]).await.is_ok());
    assert!(c.subscribe(&filters).await.unwrap_err().starts_with("connection error"));
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_drops_the_first() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("dup");
    let mut first = connected(cloud.options("dup-client", &dev)).await;
    let mut second = connected(cloud.options("dup-client", &dev)).await;
    assert!(first.closed_within(WAIT).await, "first connection dropped");
    assert_eq!(second.subscribe(&[("dup/t", QoS::AtLeastOnce)]).await.unwrap(), vec![OK1]);
    second.publish("dup/t", QoS::AtLeastOnce, false, "still here").await.unwrap();
    assert_eq!(&second.recv(WAIT).await.unwrap().payload[..], b"still here");
}

#[tokio::test]
async fn persistent_session_receives_what_was_published_while_away() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("persist");
    let mut opts = cloud.options("persist-sub", &dev);
    opts.set_clean_session(false);
    let (mut sub, present) = Client::connect(opts.clone()).await.unwrap();
    assert!(!present, "no session the first time");
    assert_eq!(sub.subscribe(&[("p/1", QoS::AtLeastOnce)]).await.unwrap(), vec![OK1]);
    sub.disconnect().await;

    let mut publ = connected(cloud.options("persist-pub", &dev)).await;
    publ.publish("p/1", QoS::AtLeastOnce, false, "while away").await.unwrap();

    let (mut sub, present) = Client::connect(opts).await.unwrap();
    assert!(present, "session resumed");
    let p = sub.recv(WAIT).await.unwrap();
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("p/1", &b"while away"[..]));
}

#[tokio::test]
async fn clean_session_does_not_resume() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("clean");
    let mut opts = cloud.options("clean-sub", &dev);
    opts.set_clean_session(false);
    let (mut sub, _) = Client::connect(opts.clone()).await.unwrap();
    sub.subscribe(&[("c/1", QoS::AtLeastOnce)]).await.unwrap();
    sub.disconnect().await;
    opts.set_clean_session(true);
    let (_sub, present) = Client::connect(opts).await.unwrap();
    assert!(!present);
}

#[tokio::test]
async fn inactive_certificate_is_refused_and_its_live_connection_dropped() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("revoked");
    let mut live = connected(cloud.options("revoked-1", &dev)).await;
    cloud.registry().update_certificate(&dev.certificate_id, CertificateStatus::Inactive).unwrap();
    assert!(live.closed_within(WAIT).await, "dropped within 5 s");
    let again = Client::connect(cloud.options("revoked-1", &dev)).await;
    assert_eq!(refused_with(again), Some(ConnectReturnCode::NotAuthorized));
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused_at_tls() {
    let cloud = TestCloud::start().await;
    let other = TestCloud::start().await;
    let stranger = other.allow_all_device("stranger");
    let (host, port) = cloud.mqtt_addr();
    // Trust our CA but present a certificate the other cloud's CA signed.
    let opts = common::mqtt_options(&host, port, cloud.ca_file(), "stranger", &stranger);
    // With TLS 1.3 the client learns of the rejection from an alert on its first read.
    let err = Client::connect(opts).await.err().expect("connection refused");
    let tls_failure =
        matches!(err, ConnectionError::Tls(_) | ConnectionError::Io(_)) || format!("{err:?}").contains("AlertReceived");
    assert!(tls_failure, "refused at TLS, before any CONNACK: {err:?}");
}

#[tokio::test]
async fn malformed_bytes_close_that_connection_while_others_keep_working() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("garbage");
    let mut good = connected(cloud.options("good", &dev)).await;
    good.subscribe(&[("g/t", QoS::AtLeastOnce)]).await.unwrap();

    let mut raw = cloud.raw_tls(&dev).await.unwrap();
    raw.write_all(&connect_packet("bad", true)).await.unwrap();
    assert_eq!(read_n(&mut raw, 4).await, vec![0x20, 2, 0, 0], "CONNACK accepted");
    raw.write_all(&[0xF0, 0x05, 1, 2, 3, 4, 5, 0x32, 0xFF]).await.unwrap();
    assert!(peer_closes(&mut raw, WAIT).await);

    good.publish("g/t", QoS::AtLeastOnce, false, "alive").await.unwrap();
    assert_eq!(&good.recv(WAIT).await.unwrap().payload[..], b"alive");
}

#[tokio::test]
async fn invalid_utf8_topic_closes_the_connection() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("utf8");
    let mut raw = cloud.raw_tls(&dev).await.unwrap();
    raw.write_all(&connect_packet("utf8", true)).await.unwrap();
    assert_eq!(read_n(&mut raw, 4).await, vec![0x20, 2, 0, 0]);
    raw.write_all(&[0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, b'x']).await.unwrap();
    assert!(peer_closes(&mut raw, WAIT).await);
}

#[tokio::test]
async fn mqtt31_connect_gets_unacceptable_protocol_version() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("v31");
    let mut raw = cloud.raw_tls(&dev).await.unwrap();
    let mut connect = connect_packet("v31", true);
    connect[8] = 3; // protocol level
    raw.write_all(&connect).await.unwrap();
    assert_eq!(read_n(&mut raw, 4).await, vec![0x20, 2, 0, 1]);
    assert!(peer_closes(&mut raw, WAIT).await);
}

#[tokio::test]
async fn retained_message_is_delivered_to_a_late_subscriber() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("retain");
    let mut publ = connected(cloud.options("retain-pub", &dev)).await;
    publ.publish("cfg/pump1", QoS::AtLeastOnce, true, "mode=auto").await.unwrap();
    let mut late = connected(cloud.options("retain-sub", &dev)).await;
    late.subscribe(&[("cfg/pump1", QoS::AtLeastOnce)]).await.unwrap();
    let p = late.recv(WAIT).await.unwrap();
    assert_eq!((p.topic.as_str(), &p.payload[..], p.retain), ("cfg/pump1", &b"mode=auto"[..], true));
}

#[tokio::test]
async fn empty_retained_publish_clears_the_retained_message() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("unretain");
    let mut publ = connected(cloud.options("unretain-pub", &dev)).await;
    publ.publish("cfg/x", QoS::AtLeastOnce, true, "old").await.unwrap();
    publ.publish("cfg/x", QoS::AtLeastOnce, true, "").await.unwrap();
    let mut late = connected(cloud.options("unretain-sub", &dev)).await;
    late.subscribe(&[("cfg/x", QoS::AtLeastOnce), ("marker", QoS::AtLeastOnce)]).await.unwrap();
    publ.publish("marker", QoS::AtLeastOnce, false, "m").await.unwrap();
    assert_eq!(late.recv(WAIT).await.unwrap().topic, "marker", "no retained message left");
}

#[tokio::test]
async fn last_will_is_published_when_a_client_vanishes() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("willing");
    let mut observer = connected(cloud.options("observer", &dev)).await;
    observer.subscribe(&[("will/+", QoS::AtLeastOnce)]).await.unwrap();
    let mut opts = cloud.options("willing", &dev);
    opts.set_last_will(LastWill::new("will/willing", "gone", QoS::AtLeastOnce, false));
    let vanishing = connected(opts).await;
    drop(vanishing); // closes the socket without DISCONNECT
    let p = observer.recv(WAIT).await.unwrap();
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("will/willing", &b"gone"[..]));
}

#[tokio::test]
async fn last_will_is_discarded_on_disconnect() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("polite");
    let mut observer = connected(cloud.options("observer2", &dev)).await;
    observer.subscribe(&[("will/+", QoS::AtLeastOnce), ("marker", QoS::AtLeastOnce)]).await.unwrap();
    let mut opts = cloud.options("polite", &dev);
    opts.set_last_will(LastWill::new("will/polite", "gone", QoS::AtLeastOnce, false));
    connected(opts).await.disconnect().await;
    // DISCONNECT is processed before the marker below reaches the broker from a second connection
    // only if we wait for the session to be released: reconnecting with the same id does that.
    let mut again = connected(cloud.options("polite", &dev)).await;
    again.publish("marker", QoS::AtLeastOnce, false, "m").await.unwrap();
    assert_eq!(observer.recv(WAIT).await.unwrap().topic, "marker");
}

#[tokio::test]
async fn will_topic_not_allowed_refuses_the_connect() {
    let cloud = TestCloud::start().await;
    let dev = cloud.device("badwill", &restricted_policy(&cloud));
    let mut opts = cloud.options("badwill", &dev);
    opts.set_last_will(LastWill::new("secret/will", "x", QoS::AtMostOnce, false));
    assert_eq!(refused_with(Client::connect(opts).await), Some(ConnectReturnCode::NotAuthorized));
}

#[tokio::test]
async fn stalled_handshake_and_missing_connect_are_closed_after_the_timeout() {
    let config = BrokerConfig { connect_timeout: Duration::from_millis(500), ..BrokerConfig::default() };
    let broker = StandaloneBroker::start(config, Vec::new()).await;
    let dev = common::create_device(&broker.registry, "staller", ALLOW_ALL);

    let mut tcp = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let mut tls = broker.raw_tls(&dev).await.unwrap(); // handshake done, no CONNECT
    let mut good = connected(broker.options("good", &dev)).await;
    assert!(peer_closes(&mut tcp, WAIT).await, "silent TCP connection closed");
    assert!(peer_closes(&mut tls, WAIT).await, "TLS connection without CONNECT closed");
    assert_eq!(
        good.subscribe(&[("s/t", QoS::AtMostOnce)]).await.unwrap(),
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
}

/// Records what the broker hands to a service.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String, Bytes)>>);

impl ServiceHandler for Recorder {
    fn wants(&self, topic: &str) -> bool {
        topic.starts_with("svc/")
    }

    fn handle(&self, from: &Publisher, topic: &str, payload: Bytes) {
        self.0.lock().unwrap().push((from.client_id.clone(), topic.to_owned(), payload));
    }
}

#[tokio::test]
async fn service_topics_go_to_the_service_and_to_subscribers() {
    let recorder = Arc::new(Recorder::default());
    let broker = StandaloneBroker::start(BrokerConfig::default(), vec![recorder.clone()]).await;
    let dev = common::create_device(&broker.registry, "svc-user", ALLOW_ALL);
    let mut sub = connected(broker.options("svc-watch", &dev)).await;
    sub.subscribe(&[("svc/#", QoS::AtLeastOnce)]).await.unwrap();
    let mut c = connected(broker.options("svc-client", &dev)).await;
    c.publish("svc/req", QoS::AtLeastOnce, false, "do it").await.unwrap();
    assert_eq!(sub.recv(WAIT).await.unwrap().topic, "svc/req");
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(seen, vec![("svc-client".to_string(), "svc/req".to_string(), Bytes::from_static(b"do it"))]);
}

#[tokio::test]
async fn bus_messages_reach_subscribers_and_can_be_retained() {
    let broker = StandaloneBroker::start(BrokerConfig::default(), Vec::new()).await;
    let dev = common::create_device(&broker.registry, "bus-user", ALLOW_ALL);
    let mut sub = connected(broker.options("bus-sub", &dev)).await;
    sub.subscribe(&[("from/service", QoS::AtLeastOnce)]).await.unwrap();
    let sent = broker.bus.publish(BusMessage {
        topic: "from/service".into(),
        payload: Bytes::from_static(b"hi"),
        qos: 1,
        retain: true,
        to: None,
        from_rules: false,
    });
    assert!(sent);
    let p = sub.recv(WAIT).await.unwrap();
    assert_eq!((&p.payload[..], p.retain), (&b"hi"[..], false));
    let mut late = connected(broker.options("bus-late", &dev)).await;
    late.subscribe(&[("from/service", QoS::AtLeastOnce)]).await.unwrap();
    assert!(late.recv(WAIT).await.unwrap().retain);
}

#[tokio::test]
async fn a_targeted_bus_message_reaches_only_its_client_subscribed_or_not() {
    let broker = StandaloneBroker::start(BrokerConfig::default(), Vec::new()).await;
    let dev = common::create_device(&broker.registry, "direct-user", ALLOW_ALL);
    let mut asker = connected(broker.options("direct-asker", &dev)).await;
    let mut other = connected(broker.options("direct-other", &dev)).await;
    other.subscribe(&[("answers/#", QoS::AtLeastOnce)]).await.unwrap();
    // The asker never subscribed, yet gets its answer; the subscriber does not.
    assert!(broker.bus.publish(BusMessage::to_client("direct-asker", "answers/1", "for you", 1)));
    assert!(broker.bus.publish(BusMessage::to_subscribers("answers/2", "for all", 1)));
    let p = asker.recv(WAIT).await.unwrap();
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("answers/1", &b"for you"[..]));
    let p = other.recv(WAIT).await.unwrap();
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("answers/2", &b"for all"[..]));
}

#[tokio::test]
async fn a_targeted_bus_message_still_needs_iot_receive() {
    let broker = StandaloneBroker::start(BrokerConfig::default(), Vec::new()).await;
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["iot:Connect","iot:Subscribe","iot:Publish"],"Resource":"*"},
        {"Effect":"Allow","Action":"iot:Receive","Resource":"arn:aws:iot:us-east-1:000000000000:topic/allowed/*"}]}"#;
    let dev = common::create_device(&broker.registry, "direct-limited", policy);
    let mut asker = connected(broker.options("direct-limited", &dev)).await;
    assert!(broker.bus.publish(BusMessage::to_client("direct-limited", "denied/1", "no", 1)));
    assert!(broker.bus.publish(BusMessage::to_client("direct-limited", "allowed/1", "yes", 1)));
    let p = asker.recv(WAIT).await.unwrap();
    assert_eq!(p.topic, "allowed/1");
}

#[tokio::test]
async fn going_past_50_subscriptions_closes_the_connection() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("fifty");
    let mut c = connected(cloud.options("fifty", &dev)).await;
    let names: Vec<String> = (0..51).map(|i| format!("s/{i}")).collect();
    for chunk in names[..50].chunks(8) {
        let filters: Vec<(&str, QoS)> = chunk.iter().map(|n| (n.as_str(), QoS::AtMostOnce)).collect();
        c.subscribe(&filters).await.expect("up to 50 subscriptions");
    }
    // Subscribing again to a held filter does not count.
    c.subscribe(&[("s/0", QoS::AtLeastOnce)]).await.expect("re-subscribe");
    let r = c.subscribe(&[(names[50].as_str(), QoS::AtMostOnce)]).await;
    assert!(r.unwrap_err().starts_with("connection error"));
}

#[tokio::test]
async fn unsubscribed_filters_stop_receiving() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("unsub");
    let mut c = connected(cloud.options("unsub", &dev)).await;
    c.subscribe(&[("u/a", QoS::AtLeastOnce), ("u/marker", QoS::AtLeastOnce)]).await.unwrap();
    c.client.unsubscribe("u/a").await.unwrap();
    c.wait_for(WAIT, |ev| matches!(ev, rumqttc::Event::Incoming(rumqttc::Incoming::UnsubAck(_))).then_some(()))
        .await
        .unwrap();
    let mut publ = connected(cloud.options("unsub-pub", &dev)).await;
    publ.publish("u/a", QoS::AtLeastOnce, false, "gone").await.unwrap();
    publ.publish("u/marker", QoS::AtLeastOnce, false, "m").await.unwrap();
    assert_eq!(c.recv(WAIT).await.unwrap().topic, "u/marker");
}

/// Reads PUBLISH packets from a raw stream until `n` arrived; returns their packet ids.
async fn read_publishes(stream: &mut (impl AsyncReadExt + Unpin), buf: &mut bytes::BytesMut, n: usize) -> Vec<u16> {
    let mut ids = Vec::new();
    while ids.len() < n {
        match rumqttc::Packet::read(buf, 1 << 20) {
            Ok(rumqttc::Packet::Publish(p)) => ids.push(p.pkid),
            Ok(_) => {}
            Err(rumqttc::Error::InsufficientBytes(_)) => {
                let read = tokio::time::timeout(WAIT, stream.read_buf(buf)).await.expect("in time").expect("read");
                assert!(read > 0, "connection closed");
            }
            Err(e) => panic!("bad packet: {e}"),
        }
    }
    ids
}

#[tokio::test]
async fn at_most_100_qos1_messages_are_unacknowledged_toward_a_subscriber() {
    let cloud = TestCloud::start().await;
    let dev = cloud.allow_all_device("window");
    let mut raw = cloud.raw_tls(&dev).await.unwrap();
    raw.write_all(&connect_packet("window-sub", true)).await.unwrap();
    assert_eq!(read_n(&mut raw, 4).await, vec![0x20, 2, 0, 0]);
    // SUBSCRIBE pkid 1, "w/t" QoS 1.
    raw.write_all(&[0x82, 8, 0, 1, 0, 3, b'w', b'/', b't', 1]).await.unwrap();
    assert_eq!(read_n(&mut raw, 5).await, vec![0x90, 3, 0, 1, 1]);

    let mut publ = connected(cloud.options("window-pub", &dev)).await;
    // Each publish returns once PUBACKed, that is once the broker queued it for the subscriber.
    for i in 0..101u32 {
        publ.publish("w/t", QoS::AtLeastOnce, false, i.to_be_bytes()).await.unwrap();
    }
    let mut buf = bytes::BytesMut::new();
    let ids = read_publishes(&mut raw, &mut buf, 100).await;
    // The 101st waits for an acknowledgement: it was queued before this PINGREQ was sent, so
    // without the window it would come before the PINGRESP.
    raw.write_all(&[0xc0, 0]).await.unwrap();
    let next = loop {
        match rumqttc::Packet::read(&mut buf, 1 << 20) {
            Ok(packet) => break packet,
            Err(rumqttc::Error::InsufficientBytes(_)) => {
                let read = tokio::time::timeout(WAIT, raw.read_buf(&mut buf)).await.expect("in time").expect("read");
                assert!(read > 0, "connection closed");
            }
            Err(e) => panic!("bad packet: {e}"),
        }
    };
    assert!(matches!(next, rumqttc::Packet::PingResp), "no 101st message before an acknowledgement: {next:?}");
    raw.write_all(&[0x40, 2, (ids[0] >> 8) as u8, ids[0] as u8]).await.unwrap();
    let next = read_publishes(&mut raw, &mut buf, 1).await;
    assert!(!ids.contains(&next[0]), "a packet id not in flight");
}

#[tokio::test]
async fn fast_qos1_publisher_loses_nothing_to_a_busy_subscriber() {
    const N: u32 = 20_000;
    // A tiny outgoing queue, so the subscriber's queue is full most of the time.
    let config = BrokerConfig { outgoing_queue_len: 10, ..BrokerConfig::default() };
    let broker = StandaloneBroker::start(config, Vec::new()).await;
    let dev = common::create_device(&broker.registry, "flood", ALLOW_ALL);
    let mut sub_options = broker.options("flood-sub", &dev);
    // The subscriber acknowledges each message itself, so the test knows how many it has.
    sub_options.set_manual_acks(true);
    let mut sub = connected(sub_options).await;
    assert_eq!(sub.subscribe(&[("flood/t", QoS::AtLeastOnce)]).await.unwrap(), vec![OK1]);
    let Client { client: publ, events: mut publ_events } = connected(broker.options("flood-pub", &dev)).await;

    // The publisher's event loop: counts PUBACKs.
    let (acked_tx, mut acked) = tokio::sync::watch::channel(0u32);
    let pub_loop = tokio::spawn(async move {
        let mut n = 0u32;
        while n < N {
            match publ_events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Incoming::PubAck(_))) => {
                    n += 1;
                    acked_tx.send_replace(n);
                }
                Ok(_) => {}
                Err(e) => return Err(format!("publisher connection error after {n} PUBACKs: {e}")),
            }
        }
        Ok(publ_events)
    });
    // As fast as the 100-message window allows.
    let sender = tokio::spawn(async move {
        for i in 0..N {
            publ.publish("flood/t", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec()).await.expect("queued");
        }
        publ
    });

    // Keep the subscriber busy (not reading) until its window and queue are
    // full: with backpressure the publisher then gets no more PUBACKs.
    let full: u32 = 100 + 10;
    tokio::time::timeout(WAIT, acked.wait_for(|&n| n >= full))
        .await
        .expect("PUBACKs until the subscriber's window and queue are full")
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut next = 0u32;
    while next < N {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let p = sub.recv(remaining).await.unwrap_or_else(|e| panic!("message {next}: {e}"));
        let got = u32::from_be_bytes(p.payload[..].try_into().expect("4-byte payload"));
        assert_eq!(got, next, "in order, none missing");
        // The subscriber has acknowledged `next` messages, so the broker has had room for at
        // most `next + full` (and holds one more): every further PUBACK would be a message
        // accepted without room.
        let pubacks = *acked.borrow();
        assert!(pubacks <= next + full + 1, "{pubacks} PUBACKs while the subscriber had acknowledged {next}");
        sub.client.ack(&p).await.unwrap();
        next += 1;
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    tokio::time::timeout(remaining, pub_loop).await.expect("all PUBACKs in time").unwrap().unwrap();
    sender.await.unwrap();
    assert_eq!(broker.broker.dropped_for_slow_subscribers(), 0);
}

/// Every count the broker has made into `metrics`, by metric name, waiting until `done` holds.
async fn broker_counts(
    metrics: &local_cloud::iot_metrics::IotMetrics,
    seen: &mut std::collections::BTreeMap<&'static str, u64>,
    done: impl Fn(&std::collections::BTreeMap<&'static str, u64>) -> bool,
) {
    let snapshot = site_testkit::wait_until(
        "the broker's AWS/IoT counts",
        async || {
            for sample in metrics.take() {
                assert_eq!(sample.dimensions, vec![("Protocol", "MQTT".to_owned())], "{sample:?}");
                *seen.entry(sample.name).or_default() += sample.count;
            }
            seen.clone()
        },
        |counts| done(counts),
        |counts| format!("{counts:?}"),
    )
    .await;
    *seen = snapshot;
}

#[tokio::test]
async fn the_broker_counts_each_outcome_in_its_aws_iot_metric() {
    let metrics: Arc<local_cloud::iot_metrics::IotMetrics> = Arc::default();
    let config = BrokerConfig { metrics: metrics.clone(), ..BrokerConfig::default() };
    let broker = StandaloneBroker::start(config, Vec::new()).await;
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:000000000000:client/ok-*"},
        {"Effect":"Allow","Action":["iot:Publish","iot:Subscribe"],"Resource":[
          "arn:aws:iot:us-east-1:000000000000:topic/ok/*","arn:aws:iot:us-east-1:000000000000:topicfilter/ok/*"]}]}"#;
    let dev = common::create_device(&broker.registry, "metered", policy);
    let mut seen = std::collections::BTreeMap::new();

    let refused = Client::connect(broker.options("not-allowed", &dev)).await;
    assert_eq!(refused_with(refused), Some(ConnectReturnCode::NotAuthorized));
    let mut c = connected(broker.options("ok-1", &dev)).await;
    let codes = c.subscribe(&[("ok/a", QoS::AtLeastOnce), ("secret/a", QoS::AtLeastOnce)]).await.unwrap();
    assert_eq!(codes, vec![OK1, SubscribeReasonCode::Failure]);
    c.subscribe(&[("ok/b", QoS::AtLeastOnce)]).await.unwrap();
    c.publish("ok/fine", QoS::AtLeastOnce, false, "x").await.unwrap();
    c.client.publish("secret/x", QoS::AtLeastOnce, false, "x").await.unwrap();
    assert!(c.closed_within(WAIT).await);
    let want = [
        ("Connect.AuthError", 1),
        ("Connect.Success", 1),
        ("PublishIn.AuthError", 1),
        ("PublishIn.Success", 1),
        ("Subscribe.AuthError", 1),
        ("Subscribe.Success", 1),
    ];
    broker_counts(&metrics, &mut seen, |counts| want.iter().all(|(m, n)| counts.get(m) == Some(n))).await;
    assert_eq!(seen.len(), want.len(), "nothing else counted: {seen:?}");

    // A certificate that is not ACTIVE, and one another CA issued: authentication failures.
    broker.registry.update_certificate(&dev.certificate_id, CertificateStatus::Inactive).unwrap();
    let again = Client::connect(broker.options("ok-2", &dev)).await;
    assert_eq!(refused_with(again), Some(ConnectReturnCode::NotAuthorized));
    let other = StandaloneBroker::start(BrokerConfig::default(), Vec::new()).await;
    let stranger = common::create_device(&other.registry, "stranger", ALLOW_ALL);
    assert!(Client::connect(broker.options("ok-3", &stranger)).await.is_err());
    broker_counts(&metrics, &mut seen, |counts| counts.get("Connection.AuthNError") == Some(&2)).await;
    assert_eq!(seen.get("Connect.AuthError"), Some(&1), "not a policy refusal: {seen:?}");
}
