//! Onboarding by claim: what the `aws.greengrass.FleetProvisioningByClaim` plugin does for a
//! nucleus that starts without an identity of its own (AWS IoT Developer Guide, "Device
//! provisioning MQTT API"; Greengrass Developer Guide, "Install AWS IoT Greengrass Core software
//! with AWS IoT fleet provisioning").
//!
//! With the plugin's configuration keys ([`ClaimConfig`]), the core connects once with the
//! factory claim certificate, asks for a certificate (`$aws/certificates/create-from-csr/json`)
//! and registers its thing through the provisioning template
//! (`$aws/provisioning-templates/{name}/provision/json`). Its identity is then kept under the
//! root ([`Identity`]) and every later start uses it: the claim is used once.
//!
//! One deliberate difference from the plugin: without `csrPath` the plugin lets AWS make the key
//! pair (CreateKeysAndCertificate); here the key pair and the CSR are always made on the device,
//! in its key store ([`super::key_store`]: a 0600 file, or a PKCS#11 token it never leaves), so
//! the private key never travels. With `csrPath` the given CSR is sent and its key is expected
//! at `claimedPrivateKeyPath` (default `{rootPath}/privKey.key`), made by whoever made the CSR.
//!
//! Layout: the request/answer shapes and the checks are pure functions with tests next to them;
//! [`onboard`] is the MQTT shell around them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_api::endpoints::Endpoints;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::key_store::{DeviceKey, KeyStore, KeyStoreError};

/// How long each exchange with the provisioning API may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the identity is kept, under the core's root.
const IDENTITY_DIR: &str = "identity";
const IDENTITY_FILE: &str = "identity.json";
const CERT_FILE: &str = "thingCert.crt";
const KEY_FILE: &str = "privKey.key";
/// The core key's name in the key store: `privKey.key` in the identity directory, or the token
/// key labelled `privKey`.
const KEY_LABEL: &str = "privKey";

/// The plugin's configuration (its keys, camelCase, as in the nucleus's configuration file).
/// The endpoints (MQTT, root CA, region) come from the core's `endpoints.json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimConfig {
    /// The provisioning template's name.
    pub provisioning_template: String,
    /// The claim certificate (PEM).
    pub claim_certificate_path: PathBuf,
    /// The claim certificate's private key (PEM).
    pub claim_certificate_private_key_path: PathBuf,
    /// The MQTT client id used with the claim (default: a new UUID-like id).
    #[serde(default)]
    pub device_id: Option<String>,
    /// The template's parameters, as strings.
    #[serde(default)]
    pub template_parameters: BTreeMap<String, String>,
    /// A CSR made elsewhere (PEM); its key must be at `claimed_private_key_path`.
    #[serde(default)]
    pub csr_path: Option<PathBuf>,
    /// The key of `csr_path`'s CSR (default `{identity}/privKey.key`).
    #[serde(default)]
    pub claimed_private_key_path: Option<PathBuf>,
}

/// Why onboarding failed, sorted by what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The configuration or a file it names is wrong: fix it.
    #[error("claim configuration: {0}")]
    Config(String),
    /// The provisioning API refused: its status, code and message (fix the template, the
    /// parameters or the claim).
    #[error("{operation} rejected: {status_code} {error_code}: {error_message}")]
    Rejected {
        /// CreateCertificateFromCsr or RegisterThing.
        operation: &'static str,
        /// `statusCode`.
        status_code: u16,
        /// `errorCode`.
        error_code: String,
        /// `errorMessage`.
        error_message: String,
    },
    /// No answer, a lost connection, an answer that cannot be read: retry later.
    #[error("onboarding by claim: {0}")]
    Transient(String),
    /// The key could not be made or used (a file or a PKCS#11 token).
    #[error("the device key: {0}")]
    Key(#[from] KeyStoreError),
    /// The identity could not be written: fix the disk or the permissions.
    #[error("cannot keep the identity in {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl ClaimError {
    /// True when retrying cannot help.
    pub fn is_configuration(&self) -> bool {
        match self {
            ClaimError::Config(_) | ClaimError::Rejected { .. } => true,
            ClaimError::Key(e) => e.is_configuration(),
            ClaimError::Transient(_) | ClaimError::Io { .. } => false,
        }
    }
}

/// The device's own identity once onboarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// The thing the template registered.
    pub thing_name: String,
    /// The certificate's id.
    pub certificate_id: String,
    /// Its certificate (PEM).
    pub cert_file: PathBuf,
    /// Its private key, as the nucleus's `privateKeyPath`: a PEM file (0600), or
    /// `pkcs11:object=privKey;type=private` for a key in the token.
    pub key_file: PathBuf,
    /// The template's `DeviceConfiguration`.
    #[serde(default)]
    pub device_configuration: BTreeMap<String, String>,
}

impl ClaimConfig {
    /// Reads the configuration from a JSON or YAML file.
    pub fn from_file(path: &Path) -> Result<Self, ClaimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClaimError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ClaimError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses JSON or YAML; checks what must be there.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value = serde_yaml_ng::from_str(text).map_err(|e| format!("not JSON or YAML: {e}"))?;
        let config: ClaimConfig = serde_json::from_value(value).map_err(|e| e.to_string())?;
        if config.provisioning_template.is_empty() {
            return Err("provisioningTemplate is empty".into());
        }
        Ok(config)
    }
}

/// The directory of the identity under `root` (0700): the record, the certificate and, without a
/// token, the key.
pub fn identity_dir(root: &Path) -> PathBuf {
    root.join(IDENTITY_DIR)
}

/// The identity kept under `root`, if the core was onboarded before.
pub fn provisioned(root: &Path) -> Result<Option<Identity>, ClaimError> {
    let path = root.join(IDENTITY_DIR).join(IDENTITY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ClaimError::Io { path, source }),
    };
    let identity: Identity = serde_json::from_slice(&bytes)
        .map_err(|e| ClaimError::Config(format!("{} is damaged ({e}); remove it to onboard again", path.display())))?;
    Ok(Some(identity))
}

/// The CreateCertificateFromCsr request.
pub fn csr_request(csr_pem: &str) -> Value {
    json!({"certificateSigningRequest": csr_pem})
}

/// The RegisterThing request.
pub fn register_request(ownership_token: &str, parameters: &BTreeMap<String, String>) -> Value {
    json!({"certificateOwnershipToken": ownership_token, "parameters": parameters})
}

/// What CreateCertificateFromCsr answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCertificate {
    /// Its id.
    pub certificate_id: String,
    /// The certificate (PEM).
    pub certificate_pem: String,
    /// The token RegisterThing takes.
    pub certificate_ownership_token: String,
}

/// What RegisterThing answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    /// The thing's name.
    pub thing_name: String,
    /// The template's `DeviceConfiguration`.
    #[serde(default)]
    pub device_configuration: BTreeMap<String, String>,
}

/// Reads an answer on `topic` to `operation` (its request topic): the accepted body, or the
/// rejection as an error.
pub fn read_answer<T: serde::de::DeserializeOwned>(
    operation: &'static str,
    request_topic: &str,
    topic: &str,
    payload: &[u8],
) -> Result<T, ClaimError> {
    let unreadable = |e: serde_json::Error| ClaimError::Transient(format!("{operation}: unreadable answer: {e}"));
    if topic == format!("{request_topic}/accepted") {
        return serde_json::from_slice(payload).map_err(unreadable);
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Rejection {
        #[serde(default)]
        status_code: u16,
        #[serde(default)]
        error_code: String,
        #[serde(default)]
        error_message: String,
    }
    let r: Rejection = serde_json::from_slice(payload).map_err(unreadable)?;
    Err(ClaimError::Rejected {
        operation,
        status_code: r.status_code,
        error_code: r.error_code,
        error_message: r.error_message,
    })
}

/// The request topics (JSON).
fn create_from_csr_topic() -> String {
    "$aws/certificates/create-from-csr/json".to_owned()
}

fn provision_topic(template: &str) -> String {
    format!("$aws/provisioning-templates/{template}/provision/json")
}

/// Onboards the core at `root`: the claim, a certificate for a key made here in `keys`, the thing
/// from the template; the identity is written under `{root}/identity` (0700; the record last)
/// and returned.
pub async fn onboard(
    config: &ClaimConfig,
    endpoints: &Endpoints,
    root: &Path,
    keys: &KeyStore,
) -> Result<Identity, ClaimError> {
    let dir = identity_dir(root);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ClaimError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    set_mode(&dir, 0o700).map_err(io(&dir))?;
    let client_id = config.device_id.clone().unwrap_or_else(|| format!("claim-{}", &super::random_token()[..16]));
    let (key_file, csr) = match &config.csr_path {
        Some(csr_path) => {
            let csr = std::fs::read_to_string(csr_path)
                .map_err(|e| ClaimError::Config(format!("cannot read csrPath {}: {e}", csr_path.display())))?;
            let key_file = config.claimed_private_key_path.clone().unwrap_or_else(|| dir.join(KEY_FILE));
            if !key_file.is_file() {
                return Err(ClaimError::Config(format!("the CSR's private key {} is missing", key_file.display())));
            }
            (key_file, csr)
        }
        None => {
            // A key of that name is left from an onboarding that never finished (the record is
            // written last, so no identity uses it).
            keys.delete(&keys.named(KEY_LABEL))?;
            let key = keys.generate(KEY_LABEL)?;
            (key.key_ref().to_path(), key.csr(&client_id)?)
        }
    };

    let claim_key = DeviceKey::File(config.claim_certificate_private_key_path.clone());
    let tls = super::bridge::device_tls_config(&endpoints.ca_file, &config.claim_certificate_path, &claim_key)
        .map_err(|e| ClaimError::Config(format!("the claim certificate: {e}")))?;
    let (host, port) = endpoints.mqtt_host_port().map_err(ClaimError::Config)?;
    let mut options = MqttOptions::new(client_id.clone(), host, port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut session = Session { client: &client, eventloop: &mut eventloop };

    let csr_topic = create_from_csr_topic();
    let issued: IssuedCertificate =
        session.exchange("CreateCertificateFromCsr", &csr_topic, &csr_request(&csr)).await?;
    let cert_file = dir.join(CERT_FILE);
    super::layout::write_durably(&cert_file, issued.certificate_pem.as_bytes()).map_err(io(&cert_file))?;
    let provision = provision_topic(&config.provisioning_template);
    let request = register_request(&issued.certificate_ownership_token, &config.template_parameters);
    let registered: Registered = session.exchange("RegisterThing", &provision, &request).await?;
    let _ = client.disconnect().await;

    let identity = Identity {
        thing_name: registered.thing_name,
        certificate_id: issued.certificate_id,
        cert_file,
        key_file,
        device_configuration: registered.device_configuration,
    };
    let record = dir.join(IDENTITY_FILE);
    let bytes = serde_json::to_vec_pretty(&identity).map_err(|e| ClaimError::Transient(e.to_string()))?;
    super::layout::write_durably(&record, &bytes).map_err(io(&record))?;
    tracing::info!(thing = %identity.thing_name, certificate = %identity.certificate_id, "onboarded by claim");
    Ok(identity)
}

/// The claim's MQTT session: one request/answer exchange at a time.
struct Session<'a> {
    client: &'a AsyncClient,
    eventloop: &'a mut rumqttc::EventLoop,
}

impl Session<'_> {
    /// Subscribes to `request_topic`'s answers, publishes `body` once subscribed, and reads the
    /// answer.
    async fn exchange<T: serde::de::DeserializeOwned>(
        &mut self,
        operation: &'static str,
        request_topic: &str,
        body: &Value,
    ) -> Result<T, ClaimError> {
        let transient = |e: String| ClaimError::Transient(format!("{operation}: {e}"));
        let answers = [format!("{request_topic}/accepted"), format!("{request_topic}/rejected")];
        for topic in &answers {
            self.client.subscribe(topic, QoS::AtLeastOnce).await.map_err(|e| transient(e.to_string()))?;
        }
        let mut acked = 0;
        let mut sent = false;
        let answer = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                            return Err(ClaimError::Config(format!(
                                "{operation}: the claim's policy does not allow subscribing to {request_topic}/+"
                            )));
                        }
                        acked += 1;
                        if acked == answers.len() && !sent {
                            sent = true;
                            self.client
                                .publish(request_topic, QoS::AtLeastOnce, false, body.to_string())
                                .await
                                .map_err(|e| transient(e.to_string()))?;
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code != rumqttc::ConnectReturnCode::Success => {
                        return Err(ClaimError::Config(format!("the claim certificate was refused: {:?}", ack.code)));
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if answers.contains(&p.topic) => {
                        return read_answer(operation, request_topic, &p.topic, &p.payload);
                    }
                    Ok(_) => {}
                    Err(e) => return Err(transient(e.to_string())),
                }
            }
        })
        .await;
        answer.unwrap_or_else(|_| Err(transient(format!("no answer within {EXCHANGE_TIMEOUT:?}"))))
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::key_store::KeyRef;

    #[test]
    fn the_plugins_keys_parse_from_json_and_yaml_and_a_missing_one_is_named() {
        let json = r#"{"provisioningTemplate": "GreengrassFleet", "claimCertificatePath": "/c/claim.pem",
            "claimCertificatePrivateKeyPath": "/c/claim.key", "templateParameters": {"ThingName": "site-7"}}"#;
        let config = ClaimConfig::parse(json).unwrap();
        assert_eq!(config.provisioning_template, "GreengrassFleet");
        assert_eq!(config.template_parameters["ThingName"], "site-7");
        assert_eq!((config.device_id, config.csr_path), (None, None));
        let yaml =
            "provisioningTemplate: T\nclaimCertificatePath: /c\nclaimCertificatePrivateKeyPath: /k\ndeviceId: d\n";
        assert_eq!(ClaimConfig::parse(yaml).unwrap().device_id.as_deref(), Some("d"));
        let missing = ClaimConfig::parse(r#"{"provisioningTemplate": "T", "claimCertificatePath": "/c"}"#);
        assert!(missing.unwrap_err().contains("claimCertificatePrivateKeyPath"));
        assert!(ClaimConfig::parse("[1, 2").is_err());
        let empty =
            r#"{"provisioningTemplate": "", "claimCertificatePath": "/c", "claimCertificatePrivateKeyPath": "/k"}"#;
        assert!(ClaimConfig::parse(empty).unwrap_err().contains("empty"));
    }

    #[test]
    fn answers_are_the_accepted_body_or_the_rejection_with_its_code() {
        let topic = "$aws/provisioning-templates/T/provision/json";
        let ok: Registered = read_answer(
            "RegisterThing",
            topic,
            &format!("{topic}/accepted"),
            br#"{"thingName": "site-7", "deviceConfiguration": {"role": "pump"}}"#,
        )
        .unwrap();
        assert_eq!((ok.thing_name.as_str(), ok.device_configuration["role"].as_str()), ("site-7", "pump"));
        let rejected = read_answer::<Registered>(
            "RegisterThing",
            topic,
            &format!("{topic}/rejected"),
            br#"{"statusCode": 400, "errorCode": "InvalidParameters", "errorMessage": "ThingName is missing"}"#,
        )
        .unwrap_err();
        assert!(rejected.is_configuration());
        assert_eq!(rejected.to_string(), "RegisterThing rejected: 400 InvalidParameters: ThingName is missing");
        let garbled =
            read_answer::<Registered>("RegisterThing", topic, &format!("{topic}/accepted"), b"{").unwrap_err();
        assert!(matches!(garbled, ClaimError::Transient(_)), "{garbled:?}");
    }

    #[test]
    fn requests_carry_the_csr_the_token_and_the_parameters() {
        assert_eq!(csr_request("PEM")["certificateSigningRequest"], "PEM");
        let params = BTreeMap::from([("ThingName".to_owned(), "site-7".to_owned())]);
        let r = register_request("tok", &params);
        assert_eq!(
            (r["certificateOwnershipToken"].as_str(), r["parameters"]["ThingName"].as_str()),
            (Some("tok"), Some("site-7"))
        );
    }

    #[test]
    fn the_key_is_made_here_and_the_csr_names_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyStore::files(identity_dir(dir.path())).generate(KEY_LABEL).unwrap();
        assert_eq!(key.key_ref(), KeyRef::File(identity_dir(dir.path()).join(KEY_FILE)));
        let pem = std::fs::read_to_string(identity_dir(dir.path()).join(KEY_FILE)).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        let csr = key.csr("site-7").unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"), "{csr}");
        let der = rustls_pemfile::csr(&mut csr.as_bytes()).unwrap().unwrap();
        use x509_parser::prelude::FromDer as _;
        let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref()).unwrap();
        let cn = parsed.certification_request_info.subject.iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "site-7");
    }

    #[test]
    fn an_identity_is_read_back_and_a_damaged_one_says_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(provisioned(dir.path()).unwrap(), None);
        let identity = Identity {
            thing_name: "site-7".into(),
            certificate_id: "abc".into(),
            cert_file: dir.path().join("c"),
            key_file: dir.path().join("k"),
            device_configuration: BTreeMap::new(),
        };
        let path = dir.path().join(IDENTITY_DIR).join(IDENTITY_FILE);
        super::super::layout::write_durably(&path, &serde_json::to_vec(&identity).unwrap()).unwrap();
        assert_eq!(provisioned(dir.path()).unwrap(), Some(identity));
        std::fs::write(&path, b"{").unwrap();
        let e = provisioned(dir.path()).unwrap_err();
        assert!(e.to_string().contains("remove it to onboard again"), "{e}");
    }
}
