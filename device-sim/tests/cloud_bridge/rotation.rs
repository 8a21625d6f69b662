//! Certificate rotation's core side: the bridge moves its one connection to another
//! certificate and key, and back, while a component's subscription keeps working.

use cloud_api::ipc::model::{Qos, SubscribeToIoTCoreRequest};
use device_sim::core::bridge::BridgeIdentity;
use device_sim::core::key_store::DeviceKey;
use local_cloud::registry::CertificateStatus;
use serde_json::json;
use site_testkit::WAIT;
use site_testkit::site::wait_connection;

use super::{THING, bytes, ipc, new_site, start_core};

/// A certificate with a fresh key issued by the cloud, written next to the site's files;
/// attached to the core's thing and policy when `attached`.
fn new_certificate(site: &site_testkit::site::Site, name: &str, attached: bool) -> (String, BridgeIdentity) {
    let registry = &site.cloud().local().registry;
    let (cert, keys) = registry.create_keys_and_certificate(true).unwrap();
    if attached {
        registry.attach_policy(&format!("{THING}-policy"), &cert.arn).unwrap();
        registry.attach_thing_principal(THING, &cert.arn).unwrap();
    }
    let (cert_file, key_file) = (site.path().join(format!("{name}.crt")), site.path().join(format!("{name}.key")));
    std::fs::write(&cert_file, cert.pem).unwrap();
    std::fs::write(&key_file, keys.private_key_pem).unwrap();
    (cert.id, BridgeIdentity { cert_file, key: DeviceKey::File(key_file) })
}

/// A command from the cloud reaches the component: its subscription is live on the connection
/// the core has now. Sent again every half second until it arrives, as a reconnect (and the
/// subscriptions re-made after it) may be under way.
async fn command_reaches(
    app: &site_testkit::mqtt::Observer,
    sub: &mut kit::ipc::Subscription<kit::ipc::operation::SubscribeToIoTCore>,
    n: u64,
    what: &str,
) {
    let expected = json!({ "n": n });
    let arrived = async {
        loop {
            app.publish("cmd/core-1/speed", bytes(&expected)).await;
            if let Ok(event) = tokio::time::timeout(std::time::Duration::from_millis(500), sub.next_event()).await {
                let m = event.unwrap().expect("the subscription is open").message;
                if serde_json::from_slice::<serde_json::Value>(m.payload.as_bytes()).unwrap() == expected {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(WAIT, arrived).await.unwrap_or_else(|_| panic!("no command reached the component {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_moves_its_connection_to_a_new_certificate_and_back_without_restarting_components() {
    let site = new_site().await;
    let core = start_core(&site).await;
    wait_connection(&core, true).await;
    let bridge = core.bridge().expect("a bridge");
    let first = bridge.identity();
    let client = ipc(&core).await;
    let mut sub = client
        .subscribe_to_iot_core(&SubscribeToIoTCoreRequest { topic_name: "cmd/core-1/#".into(), qos: Qos::AtLeastOnce })
        .await
        .unwrap();
    let app = site.cloud().observer(&["dt/core-1/#"]).await;
    let mut n = 0;
    let mut command_arrives = async |what: &str| {
        n += 1;
        command_reaches(&app, &mut sub, n, what).await;
    };
    command_arrives("before the switch").await;

    // The new certificate, attached to the same thing and policy.
    let (_, second) = new_certificate(&site, "second", true);
    let mut connection = bridge.connection();
    bridge.switch_identity(second.clone()).await.unwrap();
    tokio::time::timeout(WAIT, connection.wait_for(|up| *up))
        .await
        .expect("connected with the new certificate")
        .unwrap();
    assert_eq!(bridge.identity().cert_file, second.cert_file);
    // The old certificate leaves ACTIVE (IoT Core drops its connections): the core is not on it.
    site.cloud().set_core_certificate(CertificateStatus::Inactive);
    command_arrives("on the new certificate").await;
    assert!(*bridge.connection().borrow());

    // A certificate IoT Core refuses: the connection does not come up and the bridge says why;
    // switching back to the working identity restores it, and the component never noticed.
    let (refused_id, refused) = new_certificate(&site, "refused", false);
    site.cloud().local().registry.update_certificate(&refused_id, CertificateStatus::Inactive).unwrap();
    let mut errors = bridge.connect_error();
    bridge.switch_identity(refused).await.unwrap();
    let reason = tokio::time::timeout(WAIT, errors.wait_for(Option::is_some)).await.expect("refused").unwrap().clone();
    assert!(!*bridge.connection().borrow(), "connected with an inactive certificate: {reason:?}");
    bridge.switch_identity(second.clone()).await.unwrap();
    wait_connection(&core, true).await;
    command_arrives("back on the working certificate").await;

    // A certificate that does not match its key is refused before anything changes.
    let bad = BridgeIdentity { cert_file: second.cert_file.clone(), key: first.key.clone() };
    let err = bridge.switch_identity(bad).await.unwrap_err();
    assert!(err.0.contains("do not make a TLS identity"), "{err}");
    assert_eq!(bridge.identity().cert_file, second.cert_file);
    core.shutdown(WAIT).await;
}
