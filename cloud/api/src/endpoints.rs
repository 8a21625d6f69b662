//! `endpoints.json`: where a device or tool finds its IoT Core endpoints.
//!
//! The local cloud writes this file into its data directory when it starts, and
//! the provisioning tool writes the same shape next to a device's certificate
//! for real AWS (from `DescribeEndpoint(iot:Data-ATS)`). The simulated core
//! reads it with `--cloud`, so one file format serves both targets.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The contents of `endpoints.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// MQTT over TLS, `host:port` (real AWS: `{prefix}-ats.iot.{region}.amazonaws.com:8883`).
    pub mqtt: String,
    /// HTTP(S) base URL of the IoT data plane (the local cloud serves the control plane there too).
    pub http: String,
    /// Absolute path of the PEM file of the CA that signed the server certificate
    /// (real AWS: Amazon Root CA 1).
    pub ca_file: PathBuf,
    /// Region.
    pub region: String,
    /// Account id.
    pub account_id: String,
    /// The administrator's SigV4 key pair, for services that verify signatures (the local
    /// cloud's S3). Only the local cloud writes it; for real AWS the file carries none and
    /// clients use their own AWS credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AccessKeyPair>,
    /// Base URL of the Greengrass data plane for core devices (HTTPS with mutual TLS, no SigV4:
    /// ResolveComponentCandidates, GetComponentVersionArtifact), e.g.
    /// `https://127.0.0.1:8443` for the local cloud; real AWS:
    /// `https://greengrass-ats.iot.{region}.amazonaws.com:8443`. Absent in files written before
    /// the local cloud served Greengrass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greengrass_data_plane: Option<String>,
    /// Base URL of the AWS IoT credentials provider (HTTPS with mutual TLS:
    /// `GET /role-aliases/{alias}/credentials`), e.g. `https://127.0.0.1:8443` for the local
    /// cloud (the Greengrass data plane's listener); real AWS:
    /// `https://{prefix}.credentials.iot.{region}.amazonaws.com` (DescribeEndpoint
    /// `iot:CredentialProvider`). Absent in files written before the local cloud served it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_provider: Option<String>,
}

/// An access key id and its secret: what a client signs SigV4 requests with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyPair {
    /// The access key id (`AKID…`), sent in every signed request.
    pub access_key_id: String,
    /// The secret access key, never sent.
    pub secret_access_key: String,
}

impl std::fmt::Debug for AccessKeyPair {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyPair").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

impl Endpoints {
    /// Splits [`Endpoints::mqtt`] into host and port (port 8883 when absent).
    pub fn mqtt_host_port(&self) -> Result<(String, u16), String> {
        let s = self.mqtt.trim();
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.ends_with(':') => {
                (h, p.parse::<u16>().map_err(|_| format!("bad port in mqtt endpoint {s:?}"))?)
            }
            _ => (s, 8883),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("empty host in mqtt endpoint {s:?}"));
        }
        Ok((host.to_string(), port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_mqtt(mqtt: &str) -> Endpoints {
        Endpoints {
            mqtt: mqtt.into(),
            http: "http://127.0.0.1:4566".into(),
            ca_file: "/ca.pem".into(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            credentials: None,
            greengrass_data_plane: None,
            credentials_provider: None,
        }
    }

    #[test]
    fn mqtt_endpoint_splits_into_host_and_port() {
        assert_eq!(with_mqtt("127.0.0.1:18883").mqtt_host_port().unwrap(), ("127.0.0.1".into(), 18883));
        assert_eq!(with_mqtt("[::1]:8883").mqtt_host_port().unwrap(), ("::1".into(), 8883));
        assert_eq!(
            with_mqtt("abc-ats.iot.us-east-1.amazonaws.com").mqtt_host_port().unwrap(),
            ("abc-ats.iot.us-east-1.amazonaws.com".into(), 8883)
        );
        assert!(with_mqtt("host:notaport").mqtt_host_port().is_err());
        assert!(with_mqtt("").mqtt_host_port().is_err());
    }

    #[test]
    fn file_uses_camel_case_keys() {
        let json = serde_json::to_value(with_mqtt("h:1")).unwrap();
        assert!(json.get("caFile").is_some() && json.get("accountId").is_some(), "{json}");
        assert!(json.get("credentials").is_none(), "no key pair, no member: {json}");
    }

    #[test]
    fn key_pair_is_written_in_camel_case_and_kept_out_of_debug() {
        let mut e = with_mqtt("h:1");
        e.credentials =
            Some(AccessKeyPair { access_key_id: "AKIDLOCAL".into(), secret_access_key: "s3cr3t-value".into() });
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["credentials"]["accessKeyId"], "AKIDLOCAL");
        assert_eq!(json["credentials"]["secretAccessKey"], "s3cr3t-value");
        assert_eq!(serde_json::from_value::<Endpoints>(json).unwrap(), e);
        assert!(!format!("{e:?}").contains("s3cr3t"));
    }
}
