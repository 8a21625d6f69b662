//! The stable keys of the demo's steps (`steps[].key` in its `report.json`): the demo writes
//! them, the checklist finds a step by its key, so rewording a step's description changes
//! nothing an audit decides. A report whose steps carry no key was written before the keys
//! existed; the checks that need a step then say so instead of guessing from the wording.

/// Start: the cloud, the core device provisioned, the components deployed to its thing group.
pub const START: &str = "start";
/// Normal operation: telemetry in the cloud, the shadow reports the pump and the model.
pub const NORMAL_OPERATION: &str = "normal_operation";
/// The operator's desired state → delta → actuation at the plant → reported.
pub const SHADOW_DESIRED: &str = "shadow_desired";
/// A fault → anomaly → protective action → reported.
pub const FAULT_PROTECTION: &str = "fault_protection";
/// The fault cleared → the operator resumes → the plant follows.
pub const FAULT_RESUME: &str = "fault_resume";
/// The cloud reacts: rule → Lambda → DynamoDB → desired maintenance → the pump stopped.
pub const CLOUD_REACTION: &str = "cloud_reaction";
/// Over the air: a new analyzer version, deferred while the controller protects the pump.
pub const OTA_UPDATE: &str = "ota_update";
/// The retrained model released over the air (`provision model release`), checked at Install;
/// a model that fails the check rolls back.
pub const MODEL_RELEASE: &str = "model_release";
/// A broken version rolled back, its cause shown in the cloud.
pub const OTA_ROLLBACK: &str = "ota_rollback";
/// Loss of AWS connectivity: nothing lost, the shadow converges.
pub const CONNECTIVITY_LOSS: &str = "connectivity_loss";
/// The core's certificate rotated by a job: new key on the device, old certificate retired.
pub const CERTIFICATE_ROTATION: &str = "certificate_rotation";
/// The core updates itself to a new nucleus version.
pub const NUCLEUS_UPDATE: &str = "nucleus_update";
/// Hardware failure: the replacement onboards by claim and the site recovers.
pub const DEVICE_RECOVERY: &str = "device_recovery";
