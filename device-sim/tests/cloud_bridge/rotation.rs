//! Certificate rotation's core side: the bridge moves its one connection to another
//! certificate and key, and back, while a component's subscription keeps working; and whole
//! rotations driven by a rotation job, with the cloud's part played as the operator's
//! cloud-side step does it.

use cloud_api::ipc::model::{Qos, SubscribeToIoTCoreRequest};
use cloud_api::jobs::JobExecutionStatus;
use device_sim::core::bridge::BridgeIdentity;
use device_sim::core::key_store::DeviceKey;
use device_sim::core::key_store::softhsm::SoftToken;
use device_sim::core::options::{FreezePoint, RotationOptions};
use device_sim::core::rotation::plugin::CERTIFICATE_ROTATOR;
use device_sim::core::rotation::service::{ROTATE_OPERATION, attached_topic};
use device_sim::core::runtime::Core;
use kit::ipc::Subscription;
use kit::ipc::operation::SubscribeToIoTCore;
use local_cloud::jobs::{CreateJob, ExecutionChange};
use local_cloud::registry::CertificateStatus;
use local_cloud::server::LocalCloud;
use serde_json::json;
use site_testkit::WAIT;
use site_testkit::site::{self, wait_connection};

use super::{
    TES_ALIAS, THING, bytes, env_writer_recipe, ipc, new_site, new_site_with, start_core, tes_env, tes_role_alias,
};

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

/// The core connected, the component's subscription to its commands, and the cloud application.
async fn connected_component(
    site: &site_testkit::site::Site,
) -> (Core, Subscription<SubscribeToIoTCore>, site_testkit::mqtt::Observer) {
    let core = start_core(site).await;
    wait_connection(&core, true).await;
    let client = ipc(&core).await;
    let sub = client
        .subscribe_to_iot_core(&SubscribeToIoTCoreRequest { topic_name: "cmd/core-1/#".into(), qos: Qos::AtLeastOnce })
        .await
        .unwrap();
    let app = site.cloud().observer(&["dt/core-1/#"]).await;
    (core, sub, app)
}

/// A command from the cloud reaches the component: its subscription is live on the connection
/// the core has now. Sent again every half second until it arrives, as a reconnect (and the
/// subscriptions re-made after it) may be under way.
async fn command_reaches(
    app: &site_testkit::mqtt::Observer,
    sub: &mut Subscription<SubscribeToIoTCore>,
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
    let (core, mut sub, app) = connected_component(&site).await;
    let bridge = core.bridge().expect("a bridge");
    let first = bridge.identity();
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

/// The core's policy with what a rotation needs besides: its Jobs topics, CreateCertificateFromCsr,
/// its classic shadow's `get` (the proof) and the cloud's attach notice (under `cmd/{thing}/`).
const ROTATION_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":[
   "arn:aws:iot:*:*:topic/dt/${iot:Connection.Thing.ThingName}/*",
   "arn:aws:iot:*:*:topic/cmd/${iot:Connection.Thing.ThingName}/*",
   "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/name/pump/*",
   "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/get*",
   "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*",
   "arn:aws:iot:*:*:topic/$aws/certificates/create-from-csr/json*"]},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":[
   "arn:aws:iot:*:*:topicfilter/cmd/${iot:Connection.Thing.ThingName}/*",
   "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/name/pump/*",
   "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/get/*",
   "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*",
   "arn:aws:iot:*:*:topicfilter/$aws/certificates/create-from-csr/json/*"]}]}"#;

/// A site whose core rotates its certificate (keys as files), with `proof` to prove a new one.
async fn rotating_site(proof: std::time::Duration) -> site_testkit::site::Site {
    let mut site = new_site_with(ROTATION_POLICY).await;
    let mut options = RotationOptions::new(site.key_files());
    options.proof_deadline = proof;
    options.attach_timeout = WAIT;
    site.certificate_rotation = Some(options);
    site
}

/// The core started and connected, and the cloud application.
async fn connected_core(site: &site_testkit::site::Site) -> (Core, site_testkit::mqtt::Observer) {
    let core = start_core(site).await;
    wait_connection(&core, true).await;
    (core, site.cloud().observer(&["dt/core-1/#"]).await)
}

/// Creates a rotation job for the core.
fn rotation_job(local: &LocalCloud, job_id: &str) {
    let document = json!({ "operation": ROTATE_OPERATION }).to_string();
    let request =
        CreateJob { targets: vec![local.jobs.thing_arn(THING)], document: Some(document), ..Default::default() };
    local.jobs.create_job(job_id, request).expect("CreateJob");
}

/// The cloud's part of a rotation, as the operator's cloud-side step does it with its rights —
/// here through the local cloud's registry, driven by the job execution the core updates
/// (`changes`, taken before the job was made): on `newCertificateId` it activates the new
/// certificate, attaches it to the thing and (when `authorize`) to the old one's policies, and
/// tells the core; when the job ends it retires the old certificate (SUCCEEDED) or the new one
/// (any other end). Returns the ended execution.
async fn cloud_step(
    local: &LocalCloud,
    app: &site_testkit::mqtt::Observer,
    mut changes: tokio::sync::broadcast::Receiver<ExecutionChange>,
    job_id: &str,
    authorize: bool,
) -> ExecutionChange {
    let registry = &local.registry;
    let old = registry.list_thing_principals(THING).unwrap();
    assert_eq!(old.len(), 1, "one certificate before the rotation: {old:?}");
    let old = old[0].clone();
    // Deactivate, detach, delete (a certificate never activated is deleted the same way).
    let retire = |arn: &str| {
        let id = arn.rsplit('/').next().unwrap();
        let _ = registry.update_certificate(id, CertificateStatus::Inactive);
        let _ = registry.detach_thing_principal(THING, arn);
        for policy in registry.list_attached_policies(arn).unwrap_or_default() {
            let _ = registry.detach_policy(&policy.name, arn);
        }
        registry.delete_certificate(id, false).unwrap();
    };
    let mut new: Option<String> = None;
    loop {
        let change = tokio::time::timeout(WAIT, changes.recv()).await.expect("a job change").expect("the jobs service");
        if change.job_id != job_id {
            continue;
        }
        if let (None, Some(id)) = (&new, change.status_details.get("newCertificateId")) {
            let arn = registry.describe_certificate(id).unwrap().arn;
            registry.update_certificate(id, CertificateStatus::Active).unwrap();
            if authorize {
                for policy in registry.list_attached_policies(&old).unwrap() {
                    registry.attach_policy(&policy.name, &arn).unwrap();
                }
            }
            registry.attach_thing_principal(THING, &arn).unwrap();
            app.publish(&attached_topic(THING), bytes(&json!({"certificateId": id, "attached": true}))).await;
            new = Some(arn);
        }
        if change.status.is_terminal() {
            // A core killed before it reported the new certificate names it when it fails.
            let named = change.status_details.get("newCertificateId");
            let new = new.or_else(|| named.and_then(|id| registry.describe_certificate(id).ok()).map(|c| c.arn));
            match (change.status, &new) {
                (JobExecutionStatus::Succeeded, _) => retire(&old),
                (_, Some(new)) => retire(new),
                _ => {}
            }
            return change;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_job_moves_the_core_to_a_new_certificate_made_on_the_device_and_the_old_one_is_deleted() {
    let site = rotating_site(WAIT).await;
    let (core, mut sub, app) = connected_component(&site).await;
    command_reaches(&app, &mut sub, 1, "before the rotation").await;
    let local = site.cloud().local();
    let old = site.cloud().core.certificate_id.clone();

    let started = std::time::Instant::now();
    let changes = local.jobs.subscribe();
    rotation_job(local, "rotate-1");
    let ended = cloud_step(local, &app, changes, "rotate-1", true).await;
    assert_eq!(ended.status, JobExecutionStatus::Succeeded, "{:?}", ended.status_details);
    eprintln!("rotation took {:?}", started.elapsed());

    // Exactly one certificate, the new one, made for a key the core made; the old one is gone.
    let principals = local.registry.list_thing_principals(THING).unwrap();
    assert_eq!(principals.len(), 1, "{principals:?}");
    assert!(local.registry.describe_certificate(&old).is_err(), "the old certificate is deleted");
    let new_id = ended.status_details["newCertificateId"].clone();
    assert!(principals[0].ends_with(&new_id));
    let identity = core.bridge().unwrap().identity();
    assert!(identity.cert_file.starts_with(site.core_root()), "{identity:?}");
    assert!(identity.key.key_ref().to_path().ends_with("rotated-rotate-1.key"));
    // The component never restarted and still gets commands, over the new certificate.
    command_reaches(&app, &mut sub, 2, "after the rotation").await;

    // A restart comes back on the new certificate (the old one no longer exists).
    core.shutdown(WAIT).await;
    let core = start_core(&site).await;
    wait_connection(&core, true).await;
    assert_eq!(core.bridge().unwrap().identity().cert_file, identity.cert_file);
    core.shutdown(WAIT).await;
}

/// With rotation on, the core runs the rotator as a built-in component that fleet status lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rotator_is_a_component_the_cores_fleet_status_lists() {
    use cloud_api::greengrass::FleetStatus;
    let mut policy: serde_json::Value = serde_json::from_str(ROTATION_POLICY).unwrap();
    let health = format!("$aws/things/{THING}/greengrassv2/health/json");
    policy["Statement"].as_array_mut().unwrap().push(json!({"Effect": "Allow", "Action": "iot:Publish",
        "Resource": "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/greengrassv2/health/json"}));
    let mut site = new_site_with(&policy.to_string()).await;
    site.certificate_rotation = Some(RotationOptions::new(site.key_files()));
    site.fleet_status = Some(std::time::Duration::from_secs(3600));
    let mut app = site.cloud().observer(&[health.as_str()]).await;
    let core = start_core(&site).await;
    let report = app.wait_for("the launch report", |m| m.topic == health).await;
    let report = FleetStatus::parse(&report.payload).expect("fleet status");
    let rotator = report.components.iter().find(|c| c.component_name == CERTIFICATE_ROTATOR);
    let rotator = rotator.unwrap_or_else(|| panic!("the rotator in {report:?}"));
    assert_eq!((rotator.version.as_str(), rotator.status.as_str()), ("1.0.0", "RUNNING"), "{rotator:?}");
    core.shutdown(WAIT).await;
}

/// After a rotation the core's HTTPS clients present the new certificate too: the old one is
/// deleted, and a component's first credentials request (so no cached answer) still gets the
/// token exchange role's credentials from the credentials provider over mutual TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_the_credentials_provider_is_asked_with_the_new_certificate() {
    let mut policy: serde_json::Value = serde_json::from_str(ROTATION_POLICY).unwrap();
    policy["Statement"].as_array_mut().unwrap().push(json!({"Effect": "Allow",
        "Action": "iot:AssumeRoleWithCertificate", "Resource": format!("arn:aws:iot:*:*:rolealias/{TES_ALIAS}")}));
    let mut site = new_site_with(&policy.to_string()).await;
    let mut options = RotationOptions::new(site.key_files());
    options.attach_timeout = WAIT;
    site.certificate_rotation = Some(options);
    site.deploy("com.example.WithTes", "1.0.0", &env_writer_recipe("com.example.WithTes", true));
    let local = site.cloud().local();
    tes_role_alias(local, false);
    let core = site.start_core(&json!({"aws.greengrass.Nucleus": {"MERGE": {"iotRoleAlias": TES_ALIAS}}})).await;
    wait_connection(&core, true).await;
    let app = site.cloud().observer(&["dt/core-1/#"]).await;
    let env = tes_env(&site, &core, "com.example.WithTes").await;

    let old = site.cloud().core.certificate_id.clone();
    let changes = local.jobs.subscribe();
    rotation_job(local, "rotate-tes");
    let ended = cloud_step(local, &app, changes, "rotate-tes", true).await;
    assert_eq!(ended.status, JobExecutionStatus::Succeeded, "{:?}", ended.status_details);
    assert!(local.registry.describe_certificate(&old).is_err(), "the old certificate is deleted");

    assert_eq!(core.token_exchange().provider_requests(), 0, "nothing asked before the rotation");
    let (status, body) = site_testkit::http_request(&env["uri"], "GET", Some(&env["token"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(core.token_exchange().provider_requests(), 1);
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_the_policy_does_not_allow_is_rolled_back_and_the_job_fails_with_the_reason() {
    // The proof deadline comes from the rotator component's configuration.
    let site = rotating_site(WAIT).await;
    let mut config = site::shadow_sync(&["pump"]);
    config[CERTIFICATE_ROTATOR] = json!({"MERGE": {"proofDeadlineSeconds": 3}});
    let core = site.start_core(&config).await;
    wait_connection(&core, true).await;
    let app = site.cloud().observer(&["dt/core-1/#"]).await;
    let first = core.bridge().unwrap().identity();
    let local = site.cloud().local();

    let changes = local.jobs.subscribe();
    rotation_job(local, "rotate-2");
    let ended = cloud_step(local, &app, changes, "rotate-2", false).await;
    assert_eq!(ended.status, JobExecutionStatus::Failed);
    let reason = &ended.status_details["reason"];
    assert!(reason.contains("did not connect within 3s"), "{reason}");

    // Back on the old certificate, the only one the thing has; the new key is gone.
    wait_connection(&core, true).await;
    assert_eq!(core.bridge().unwrap().identity().cert_file, first.cert_file);
    let principals = local.registry.list_thing_principals(THING).unwrap();
    assert_eq!(principals.len(), 1, "{principals:?}");
    assert!(principals[0].ends_with(&site.cloud().core.certificate_id));
    assert!(!site.core_root().join("identity/rotated-rotate-2.key").exists());
    core.shutdown(WAIT).await;
}

/// How many record writes a whole rotation makes: the request (naming the key before it is
/// made), the certificate, the switch, the commit, the end.
const ROTATION_WRITES: usize = 5;
/// The write that commits.
const COMMIT_WRITE: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_killed_after_each_write_of_a_rotation_comes_back_with_exactly_one_working_certificate() {
    for writes in 1..=ROTATION_WRITES {
        let mut site = rotating_site(WAIT).await;
        let freeze = FreezePoint::after_writes(writes);
        if let Some(options) = site.certificate_rotation.as_mut() {
            options.freeze = Some(freeze.clone());
        }
        let (core, app) = connected_core(&site).await;
        let local = site.cloud().local();
        let changes = local.jobs.subscribe();
        let job = format!("kill-{writes}");
        rotation_job(local, &job);
        // The rotation stops dead after that write; the core goes as a killed one would (what is
        // on disk is all that is left of the rotation) and starts again on the same root.
        let killed_and_restarted = async {
            tokio::time::timeout(WAIT, freeze.frozen.notified()).await.expect("the rotation reaches the write");
            core.shutdown(WAIT).await;
            start_core(&site).await
        };
        let (ended, core) = tokio::join!(cloud_step(local, &app, changes, &job, true), killed_and_restarted);
        let expected = if writes < COMMIT_WRITE { JobExecutionStatus::Failed } else { JobExecutionStatus::Succeeded };
        assert_eq!(ended.status, expected, "killed after write {writes}: {:?}", ended.status_details);

        // Connected, on the one certificate the thing has; no other certificate is active but
        // the operator's.
        wait_connection(&core, true).await;
        let registry = &local.registry;
        let in_use = std::fs::read_to_string(core.bridge().unwrap().identity().cert_file).unwrap();
        let principals = registry.list_thing_principals(THING).unwrap();
        assert_eq!(principals.len(), 1, "killed after write {writes}: {principals:?}");
        let attached = registry.list_certificates().into_iter().find(|c| c.arn == principals[0]).unwrap();
        assert_eq!(
            attached.pem.trim(),
            in_use.trim(),
            "killed after write {writes}: the core uses the thing's certificate"
        );
        let active: Vec<_> =
            registry.list_certificates().into_iter().filter(|c| c.status == CertificateStatus::Active).collect();
        assert_eq!(active.len(), 2, "killed after write {writes}: the core's and the operator's only");
        core.shutdown(WAIT).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_rotate_command_does_the_clouds_part_through_the_aws_sdk() {
    let site = rotating_site(WAIT).await;
    let core = start_core(&site).await;
    wait_connection(&core, true).await;
    let (iot, data) = operator_clients(&site).await;
    let poll = std::time::Duration::from_millis(50);
    let outcome = provision::rotate::rotate(&iot, &data, THING, "rotate-sdk", poll, WAIT).await.expect("rotate");
    assert_eq!(outcome.status, "SUCCEEDED", "{:?}", outcome.details);
    assert!(!outcome.timed_out);

    let registry = &site.cloud().local().registry;
    assert!(registry.describe_certificate(&site.cloud().core.certificate_id).is_err(), "the old one is deleted");
    let principals = registry.list_thing_principals(THING).unwrap();
    assert_eq!(principals.len(), 1, "{principals:?}");
    assert!(principals[0].ends_with(&outcome.certificate_id));
    wait_connection(&core, true).await;
    let in_use = std::fs::read_to_string(core.bridge().unwrap().identity().cert_file).unwrap();
    assert_eq!(registry.describe_certificate(&outcome.certificate_id).unwrap().pem.trim(), in_use.trim());
    core.shutdown(WAIT).await;
}

/// The operator's clients of the site's local cloud: IoT control plane and IoT data plane.
async fn operator_clients(site: &site_testkit::site::Site) -> (aws_sdk_iot::Client, aws_sdk_iotdataplane::Client) {
    let options =
        provision::ClientOptions::for_local_cloud(site.cloud().endpoints()).expect("the administrator's key pair");
    (provision::iot_client(&options).await, provision::iot_data_client(&options).await)
}

/// The expiry trigger: the sweep finds the core whose certificate (from a CA with a short life)
/// expires in ten days, rotates it, and leaves a thing whose certificate lasts; the new
/// certificate is not expiring, so a second sweep has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_sweep_rotates_the_core_whose_certificate_expires_soon_and_only_that_one() {
    let site = rotating_site(WAIT).await;
    let registry = &site.cloud().local().registry;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (short, keys) = registry.create_keys_and_certificate_valid_until(true, now + 10 * 86_400).unwrap();
    registry.attach_policy(&format!("{THING}-policy"), &short.arn).unwrap();
    registry.attach_thing_principal(THING, &short.arn).unwrap();
    let original = registry.describe_certificate(&site.cloud().core.certificate_id).unwrap();
    registry.detach_thing_principal(THING, &original.arn).unwrap();
    registry.update_certificate(&original.id, CertificateStatus::Inactive).unwrap();
    registry.detach_policy(&format!("{THING}-policy"), &original.arn).unwrap();
    registry.delete_certificate(&original.id, false).unwrap();
    std::fs::write(&site.cloud().core.cert_file, &short.pem).unwrap();
    std::fs::write(&site.cloud().core.key_file, &keys.private_key_pem).unwrap();
    registry.create_thing("lasting", None, Default::default()).unwrap();
    let (lasting, _) = registry.create_keys_and_certificate(true).unwrap();
    registry.attach_thing_principal("lasting", &lasting.arn).unwrap();
    let core = start_core(&site).await;
    wait_connection(&core, true).await;

    let (iot, data) = operator_clients(&site).await;
    let poll = std::time::Duration::from_millis(50);
    let swept = provision::rotate::rotate_expiring(&iot, &data, 30, "sweep", 4, poll, WAIT).await.expect("the sweep");
    assert_eq!(swept.len(), 1, "{swept:?}");
    let provision::rotate::Expiry::Rotate { thing, certificate_id, .. } = &swept[0].expiry else { panic!("{swept:?}") };
    assert_eq!((thing.as_str(), certificate_id.as_str()), (THING, short.id.as_str()));
    let outcome = swept[0].rotation.as_ref().unwrap().as_ref().expect("rotated");
    assert_eq!((outcome.status.as_str(), outcome.job_id.as_str()), ("SUCCEEDED", "sweep-core-1"), "{outcome:?}");
    assert!(registry.describe_certificate(&short.id).is_err(), "the expiring certificate is deleted");
    let principals = registry.list_thing_principals(THING).unwrap();
    assert_eq!(principals.len(), 1, "{principals:?}");
    assert!(principals[0].ends_with(&outcome.certificate_id));
    assert_eq!(registry.list_thing_principals("lasting").unwrap(), vec![lasting.arn.clone()], "left alone");

    let again = provision::rotate::rotate_expiring(&iot, &data, 30, "sweep-2", 4, poll, WAIT).await.unwrap();
    assert!(again.is_empty(), "nothing expires any more: {again:?}");
    wait_connection(&core, true).await;
    core.shutdown(WAIT).await;
}

/// The cloud step resumes: a rotation job whose follower stopped (the device has its new
/// certificate and waits for the attach) is found by the next `rotate` of the thing, which
/// finishes that job instead of starting another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_cloud_step_stopped_is_resumed_by_the_next_run() {
    let site = rotating_site(WAIT).await;
    let local = site.cloud().local();
    let core = start_core(&site).await;
    wait_connection(&core, true).await;
    rotation_job(local, "rotate-orphan");
    let reported = site_testkit::wait_until(
        "the core to report its new certificate",
        async || local.jobs.describe_execution("rotate-orphan", THING).ok(),
        |e| e.as_ref().is_some_and(|e| e.status_details.contains_key("newCertificateId")),
        |e| format!("{e:?}"),
    )
    .await
    .unwrap();
    let new_id = reported.status_details["newCertificateId"].clone();

    let (iot, data) = operator_clients(&site).await;
    let poll = std::time::Duration::from_millis(50);
    let outcome =
        provision::rotate::rotate(&iot, &data, THING, "rotate-new", poll, WAIT).await.expect("the resumed rotation");
    assert!(outcome.resumed);
    assert_eq!((outcome.job_id.as_str(), outcome.status.as_str()), ("rotate-orphan", "SUCCEEDED"), "{outcome:?}");
    assert_eq!(outcome.certificate_id, new_id);
    assert!(local.jobs.describe_execution("rotate-new", THING).is_err(), "no second job");
    let principals = local.registry.list_thing_principals(THING).unwrap();
    assert_eq!(principals.len(), 1, "{principals:?}");
    assert!(principals[0].ends_with(&new_id));
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_after_the_core_committed_takes_the_core_back_to_the_old_certificate_the_cloud_kept() {
    let mut site = rotating_site(std::time::Duration::from_secs(2)).await;
    let freeze = FreezePoint::after_writes(COMMIT_WRITE);
    if let Some(options) = site.certificate_rotation.as_mut() {
        options.freeze = Some(freeze.clone());
    }
    let (core, app) = connected_core(&site).await;
    let first = core.bridge().unwrap().identity();
    let local = site.cloud().local();
    let changes = local.jobs.subscribe();
    rotation_job(local, "cancel-1");
    // The commit is on disk and its SUCCEEDED report not sent when the operator cancels the job
    // and the core goes down; the cloud retires the new certificate. At its next start the core
    // cannot get in with the new certificate, reports over the old one, hears the job has ended,
    // and goes back to the old certificate.
    let cancelled_and_restarted = async {
        tokio::time::timeout(WAIT, freeze.frozen.notified()).await.expect("the rotation commits");
        local.jobs.cancel_job("cancel-1", true, None, Some("changed our mind".into())).expect("CancelJob");
        core.shutdown(WAIT).await;
        start_core(&site).await
    };
    let (ended, core) = tokio::join!(cloud_step(local, &app, changes, "cancel-1", true), cancelled_and_restarted);
    assert_eq!(ended.status, JobExecutionStatus::Canceled);
    let bridge = core.bridge().unwrap();
    let back = site_testkit::wait_until(
        "the core to be back on its old certificate",
        async || (bridge.identity().cert_file, *bridge.connection().borrow()),
        |(cert, up)| *up && *cert == first.cert_file,
        |seen| format!("{seen:?}"),
    )
    .await;
    assert!(back.1);
    let principals = local.registry.list_thing_principals(THING).unwrap();
    assert_eq!(principals.len(), 1, "{principals:?}");
    assert!(principals[0].ends_with(&site.cloud().core.certificate_id));
    let active = local.registry.list_certificates().into_iter().filter(|c| c.status == CertificateStatus::Active);
    assert_eq!(active.count(), 2, "the core's and the operator's only");
    assert!(!site.core_root().join("identity/rotated-cancel-1.key").exists(), "the new key is deleted");
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_commit_report_is_sent_again_and_the_old_certificate_is_retired_only_after_it_is_taken() {
    let site = rotating_site(WAIT).await;
    let (core, app) = connected_core(&site).await;
    let local = site.cloud().local();
    // IoT Core throttles the core's first two SUCCEEDED reports (AWS's rotator left the new
    // certificate active and the job unfinished here, its #68).
    local.jobs.throttle_updates(JobExecutionStatus::Succeeded, 2);
    let changes = local.jobs.subscribe();
    rotation_job(local, "throttled-1");
    let ended = cloud_step(local, &app, changes, "throttled-1", true).await;
    assert_eq!(ended.status, JobExecutionStatus::Succeeded, "{:?}", ended.status_details);
    assert_eq!(local.jobs.throttles_left(), 0, "both reports were throttled first");

    let principals = local.registry.list_thing_principals(THING).unwrap();
    assert_eq!(principals.len(), 1, "{principals:?}");
    assert!(principals[0].ends_with(&ended.status_details["newCertificateId"]));
    assert!(local.registry.describe_certificate(&site.cloud().core.certificate_id).is_err());
    wait_connection(&core, true).await;
    let in_use = std::fs::read_to_string(core.bridge().unwrap().identity().cert_file).unwrap();
    let attached = local.registry.list_certificates().into_iter().find(|c| c.arn == principals[0]).unwrap();
    assert_eq!(attached.pem.trim(), in_use.trim());
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_process_with_a_pkcs11_token_rotates_to_a_key_made_in_the_token() {
    let site = rotating_site(WAIT).await;
    let token = SoftToken::new(&site.path().join("softhsm"), "core").unwrap_or_else(|e| panic!("{e}"));
    let config = site.path().join("pkcs11.json");
    token.write_config(&config).unwrap();
    let cloud = site.cloud();
    let root = site.path().join("process-core");
    let mut command = core_command(&site, &root, None);
    command.arg("--pkcs11").arg(&config).env("SOFTHSM2_CONF", &token.conf);
    let mut core = spawn(command, &site.path().join("process-core.log"));
    let app = cloud.observer(&["dt/core-1/#"]).await;
    let local = cloud.local();
    let changes = local.jobs.subscribe();
    rotation_job(local, "token-1");
    let log_file = site.path().join("process-core.log");
    let ended = cloud_step(local, &app, changes, "token-1", true).await;
    let _ = core.kill();
    let _ = core.wait();
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert_eq!(ended.status, JobExecutionStatus::Succeeded, "{:?}\n{log}", ended.status_details);
    // The new key is in the token (no key file); the record names it, and the thing has only the
    // certificate issued for it.
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(device_sim::core::claim::identity_dir(&root).join("rotation.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["current"]["keyFile"], "pkcs11:object=rotated-token-1;type=private", "{record}");
    assert!(!device_sim::core::claim::identity_dir(&root).join("rotated-token-1.key").exists());
    let principals = local.registry.list_thing_principals(THING).unwrap();
    assert_eq!(principals.len(), 1, "{principals:?}");
    assert!(principals[0].ends_with(&ended.status_details["newCertificateId"]));
}

/// A `device-sim core` process on `root` that rotates on jobs (keys as files), logging to `log`;
/// with `freeze`, its rotation hangs after that many record writes.
fn core_process(
    site: &site_testkit::site::Site,
    root: &std::path::Path,
    log: &std::path::Path,
    freeze: Option<usize>,
) -> std::process::Child {
    spawn(core_command(site, root, freeze), log)
}

/// Starts `command` with its standard error appended to `log`.
fn spawn(mut command: std::process::Command, log: &std::path::Path) -> std::process::Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    command.stdout(std::process::Stdio::null()).stderr(log).spawn().expect("the core starts")
}

/// The command line of [`core_process`].
fn core_command(
    site: &site_testkit::site::Site,
    root: &std::path::Path,
    freeze: Option<usize>,
) -> std::process::Command {
    let cloud = site.cloud();
    let endpoints = site.path().join("endpoints.json");
    std::fs::write(&endpoints, serde_json::to_vec(cloud.endpoints()).unwrap()).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_device-sim"));
    command
        .args(["core", "--thing", THING, "--root"])
        .arg(root)
        .arg("--cloud")
        .arg(&endpoints)
        .arg("--cert")
        .arg(&cloud.core.cert_file)
        .arg("--key")
        .arg(&cloud.core.key_file)
        .arg("--certificate-rotation")
        .arg("--recipe-dir")
        .arg(site.path().join("recipes"))
        .arg("--artifact-dir")
        .arg(site.path().join("artifacts"))
        .args(["--merge", &format!("{}=1.0.0", super::COMPONENT)]);
    if let Some(n) = freeze {
        command.args(["--rotation-freeze-after-writes", &n.to_string()]);
    }
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_process_sigkilled_after_each_write_of_a_rotation_comes_back_with_exactly_one_working_certificate() {
    for writes in 1..=ROTATION_WRITES {
        let site = rotating_site(WAIT).await;
        let (root, log) = (site.path().join("process-core"), site.path().join("process-core.log"));
        let mut core = core_process(&site, &root, &log, Some(writes));
        let app = site.cloud().observer(&["dt/core-1/#"]).await;
        let local = site.cloud().local();
        let changes = local.jobs.subscribe();
        let job = format!("sigkill-{writes}");
        rotation_job(local, &job);
        let killed_and_restarted = async {
            site_testkit::wait_until(
                format!("the rotation to freeze after write {writes}"),
                async || std::fs::read_to_string(&log).unwrap_or_default(),
                |text| text.contains("frozen after a record write"),
                |text| text.clone(),
            )
            .await;
            core.kill().expect("SIGKILL");
            core.wait().unwrap();
            core_process(&site, &root, &log, None)
        };
        let (ended, mut core) = tokio::join!(cloud_step(local, &app, changes, &job, true), killed_and_restarted);
        let expected = if writes < COMMIT_WRITE { JobExecutionStatus::Failed } else { JobExecutionStatus::Succeeded };
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(ended.status, expected, "killed after write {writes}: {:?}\n{text}", ended.status_details);

        // The thing has one certificate, the one the core's record says it uses, and no other
        // certificate is active but the operator's; the core is connected with it (IoT Core
        // lists the connection of its client id).
        let registry = &local.registry;
        let principals = registry.list_thing_principals(THING).unwrap();
        assert_eq!(principals.len(), 1, "killed after write {writes}: {principals:?}");
        // The core writes the end of the rotation once it hears its last report was taken.
        let record_file = device_sim::core::claim::identity_dir(&root).join("rotation.json");
        let record = site_testkit::wait_until(
            format!("the core to end the rotation killed after write {writes}"),
            async || serde_json::from_slice::<serde_json::Value>(&std::fs::read(&record_file).unwrap()).unwrap(),
            |record| record["rotation"].is_null(),
            |record| record.to_string(),
        )
        .await;
        let in_use = match record["current"]["certFile"].as_str() {
            Some(file) => std::fs::read_to_string(file).unwrap(),
            None => std::fs::read_to_string(&site.cloud().core.cert_file).unwrap(),
        };
        let attached = registry.list_certificates().into_iter().find(|c| c.arn == principals[0]).unwrap();
        assert_eq!(attached.pem.trim(), in_use.trim(), "killed after write {writes}: {record}");
        let active = registry.list_certificates().into_iter().filter(|c| c.status == CertificateStatus::Active);
        assert_eq!(active.count(), 2, "killed after write {writes}: the core's and the operator's only");
        let _ = core.kill();
        let _ = core.wait();
    }
}
