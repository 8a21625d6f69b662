//! What the core is asked to run (the `device-sim core` flags): the one input every service
//! of the core builds itself from.

use std::collections::HashMap;
use std::path::PathBuf;

use cloud_api::endpoints::Endpoints;

use super::key_store::DeviceKey;

use crate::recipe::{ComponentVersion, ConfigurationUpdate, DevicePlatform};

/// The nucleus version the simulated core claims in `GGC_VERSION` unless it is told otherwise
/// ([`CoreOptions::nucleus_version`]; a recent 2.x release; our behaviour follows the nucleus
/// source of that line).
pub const GGC_VERSION: &str = "2.14.0";

/// What to run and where (the `device-sim core` flags).
#[derive(Debug, Clone)]
pub struct CoreOptions {
    /// The core's root directory (`{kernel:rootPath}`); created if missing.
    pub root: PathBuf,
    /// The core device's thing name (`AWS_IOT_THING_NAME`, `{iot:thingName}`).
    pub thing: String,
    /// Where the recipes are (`--recipe-dir`).
    pub recipe_dir: PathBuf,
    /// Where the artifacts are: `{artifact_dir}/{Name}/{Version}/` (`--artifact-dir`).
    pub artifact_dir: PathBuf,
    /// The deployment's root components, `NAME=VERSION` each (`--merge`).
    pub merges: Vec<String>,
    /// The AWS Region (`AWS_REGION`).
    pub region: String,
    /// The root CA file (`GG_ROOT_CA_PATH`).
    pub root_ca_path: Option<PathBuf>,
    /// The device's platform, for manifest selection.
    pub platform: DevicePlatform,
    /// Per-component configuration updates (`--update-config`).
    pub update_config: HashMap<String, ConfigurationUpdate>,
    /// The IoT Core connection (`--cloud`, `--cert`, `--key`); `None` runs offline for good.
    pub cloud: Option<CloudOptions>,
    /// The nucleus version this core claims (`--nucleus-version`: the launcher passes the
    /// version it installed the core as): `GGC_VERSION`, fleet status, and the built-in
    /// `aws.greengrass.Nucleus` in dependency resolution. Usually [`GGC_VERSION`].
    pub nucleus_version: ComponentVersion,
}

/// Where the core device's IoT Core connection goes, and as whom.
#[derive(Debug, Clone)]
pub struct CloudOptions {
    /// `endpoints.json`.
    pub endpoints: Endpoints,
    /// The core device's certificate (PEM).
    pub cert_file: PathBuf,
    /// The core device's private key: a PEM file, or a key in a PKCS#11 token
    /// ([`super::key_store`]).
    pub key: DeviceKey,
    /// The fleet status service's cadence (the nucleus's `periodicUpdateIntervalSec`); `None`
    /// leaves the service off. The device's IoT policy must allow `iot:Publish` on
    /// `$aws/things/{thing}/greengrassv2/health/json`, as AWS's minimal core policy does: an
    /// MQTT 3.1.1 client is disconnected for a publish its policy denies.
    pub fleet_status: Option<std::time::Duration>,
    /// The telemetry agent's intervals past the minimums of the nucleus configuration (as the
    /// nucleus's test feature parameters do; [`super::telemetry`]); `None`
    /// keeps what `aws.greengrass.Nucleus`'s `telemetry` configuration says (default: aggregate
    /// hourly, publish daily). The device's IoT policy must allow `iot:Publish` on
    /// `$aws/things/{thing}/greengrass/health/json`.
    pub telemetry_intervals: Option<TelemetryIntervals>,
    /// Takes deployments from the cloud: thing-group deployments (IoT jobs) and thing
    /// deployments (the deployment shadow), with components resolved and downloaded through the
    /// Greengrass data plane (`greengrassDataPlane` in `endpoints.json`). The device's IoT
    /// policy must allow the topics and actions of
    /// `cloud/provision/policies/greengrass-core-deployments.json`.
    pub cloud_deployments: bool,
    /// The MQTT version of the IoT Core connection (the nucleus's `mqtt.version`: MQTT 5
    /// unless told otherwise).
    pub mqtt_version: MqttVersion,
    /// Rotates the core's certificate on rotation jobs, making new keys in this key store
    /// ([`super::rotation`]); `None` leaves rotation off. The device's IoT policy must allow
    /// the topics listed in the README's "Certificate rotation".
    pub certificate_rotation: Option<RotationOptions>,
}

/// Telemetry intervals that bypass the configuration's minimums: what the nucleus's test feature
/// parameters (`telemetryPeriodicAggregateMetricsIntervalSec`, `…PublishMetricsIntervalSec`) do,
/// for tests and demos that cannot wait an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelemetryIntervals {
    /// How often samples are taken and averaged.
    pub aggregate: std::time::Duration,
    /// How often the data points are published.
    pub publish: std::time::Duration,
}

/// How the core rotates its certificate ([`super::rotation`]).
#[derive(Debug, Clone)]
pub struct RotationOptions {
    /// The core's key store: new keys are made there.
    pub keys: super::key_store::KeyStore,
    /// How long a new certificate has to prove itself on the connection.
    pub proof_deadline: std::time::Duration,
    /// How long the cloud has to attach a new certificate to the thing and its policies.
    pub attach_timeout: std::time::Duration,
    /// Fault injection for the kill test: the rotation stops dead right after a record write.
    pub freeze: Option<std::sync::Arc<FreezePoint>>,
}

/// Where the kill test stops a rotation: right after the `n`-th record write (counted across
/// every core that shares it), once; the rotation then hangs as a killed process would, and
/// [`FreezePoint::frozen`] is told.
#[derive(Debug)]
pub struct FreezePoint {
    writes_left: std::sync::atomic::AtomicUsize,
    /// Notified when the rotation froze.
    pub frozen: tokio::sync::Notify,
}

impl FreezePoint {
    /// Freezes after the `n`-th write (`n` ≥ 1).
    pub fn after_writes(n: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self { writes_left: n.into(), frozen: tokio::sync::Notify::new() })
    }

    /// A record was written: whether to freeze now (then [`Self::frozen`] has been told).
    pub fn wrote(&self) -> bool {
        use std::sync::atomic::Ordering;
        let before = self.writes_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if before == Ok(1) {
            self.frozen.notify_one();
            return true;
        }
        false
    }
}

impl RotationOptions {
    /// New keys in `keys`; 60 s for the proof, 5 minutes for the attach.
    pub fn new(keys: super::key_store::KeyStore) -> Self {
        Self {
            keys,
            proof_deadline: std::time::Duration::from_secs(60),
            attach_timeout: std::time::Duration::from_secs(300),
            freeze: None,
        }
    }
}

impl CoreOptions {
    /// The nucleus version a core claims unless told otherwise ([`GGC_VERSION`]).
    pub fn default_nucleus_version() -> ComponentVersion {
        ComponentVersion::parse(GGC_VERSION).unwrap_or_else(|_| unreachable!("a valid constant"))
    }

    /// The options with `root`, `recipe_dir` and `artifact_dir` made absolute: recipe variables
    /// expand to these paths and components run in their work directories, so relative paths
    /// would point nowhere (the nucleus's root is always absolute).
    pub fn absolute(mut self) -> Self {
        for path in [&mut self.root, &mut self.recipe_dir, &mut self.artifact_dir] {
            if let Ok(absolute) = std::path::absolute(&*path) {
                *path = absolute;
            }
        }
        self
    }
}

/// Which MQTT version the bridge speaks: the nucleus's `mqtt.version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// `mqtt5` (the default).
    #[default]
    Mqtt5,
    /// `mqtt3`: MQTT 3.1.1; the MQTT 5 properties of PublishToIoTCore are dropped.
    Mqtt311,
}

impl std::str::FromStr for MqttVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "mqtt5" | "5" => Ok(Self::Mqtt5),
            "mqtt3" | "mqtt311" | "3.1.1" | "3" => Ok(Self::Mqtt311),
            other => Err(format!("unknown MQTT version {other:?} (expected \"mqtt5\" or \"mqtt3\")")),
        }
    }
}

impl std::fmt::Display for MqttVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mqtt5 => "mqtt5",
            Self::Mqtt311 => "mqtt3",
        })
    }
}
