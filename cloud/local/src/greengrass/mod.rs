//! The Greengrass v2 service of the local cloud.

pub mod deployments;
