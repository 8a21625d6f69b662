//! AWS IoT Device Shadow service contract: reserved topics, documents, and the
//! pure engine that applies get/update/delete requests to a stored shadow.
//! Follows "Device Shadow service documents" and "Device Shadow MQTT topics"
//! in the AWS IoT Core Developer Guide.

pub mod engine;
pub mod topic;

pub use engine::{ShadowError, ShadowLimits, ShadowRecord, StoredShadow, UpdateResult};
pub use topic::{
    ShadowOperation, ShadowResponse, ShadowTopic, is_valid_shadow_name, is_valid_thing_name, shadow_topic_prefix,
};
