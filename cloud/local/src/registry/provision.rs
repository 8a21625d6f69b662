//! The registry's side of fleet provisioning: certificates created over MQTT wait in
//! `PENDING_ACTIVATION`; RegisterThing applies an evaluated template ([`Plan`]) in one
//! transaction (thing, thing groups, policies, attachments, certificate status), so a failure
//! leaves nothing half-created; a pending certificate whose ownership token expired is deleted.

use std::collections::BTreeSet;
use std::sync::Arc;

use cloud_api::policy::PolicyDocument;

use super::{
    CertificateStatus, K_CERT, K_GROUP_MEMBER, K_POLICY, K_POLICY_TARGET, K_THING, K_THING_PRINCIPAL, KeyPair,
    MAX_GROUPS_PER_THING, Policy, Registry, RegistryError, RegistryEvent, RemovalCause, Thing, check_attributes,
    check_policy_name, check_thing_name, del, del_pair, internal, put, put_pair,
};
use crate::provisioning::template::{ExistingThing, Plan, PolicySpec, TemplateError, thing_change};
use crate::registry::Certificate;

/// What RegisterThing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The thing's name, when the template has a thing.
    pub thing_name: Option<String>,
    /// The certificate's status afterwards.
    pub certificate_status: CertificateStatus,
}

impl From<TemplateError> for RegistryError {
    fn from(e: TemplateError) -> Self {
        RegistryError::InvalidRequest(e.to_string())
    }
}

impl Registry {
    /// CreateKeysAndCertificate over MQTT: a new key pair and a `PENDING_ACTIVATION` certificate.
    pub fn create_pending_keys_and_certificate(&self) -> Result<(Certificate, KeyPair), RegistryError> {
        let (issued, public_key_pem, private_key_pem) =
            self.ca.issue_with_new_key("AWS IoT Certificate").map_err(internal)?;
        let cert = self.register_with_status(issued.pem, &issued.der, CertificateStatus::PendingActivation)?;
        Ok((cert, KeyPair { public_key_pem, private_key_pem }))
    }

    /// CreateCertificateFromCsr over MQTT: a `PENDING_ACTIVATION` certificate for the CSR's key.
    pub fn create_pending_certificate_from_csr(&self, csr_pem: &str) -> Result<Certificate, RegistryError> {
        let issued = self.ca.issue_for_csr(csr_pem).map_err(|e| RegistryError::CertificateValidation(e.to_string()))?;
        self.register_with_status(issued.pem, &issued.der, CertificateStatus::PendingActivation)
    }

    /// CreateProvisioningClaim: an ACTIVE certificate valid until `not_after` (epoch seconds)
    /// with `policy` (created with `document` if absent) attached.
    pub fn create_claim_certificate(
        &self,
        not_after: u64,
        policy: &str,
        document: &str,
    ) -> Result<(Certificate, KeyPair), RegistryError> {
        if self.get_policy(policy).is_err() {
            match self.create_policy(policy, document) {
                Ok(_) | Err(RegistryError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let (issued, public_key_pem, private_key_pem) =
            self.ca.issue_with_new_key_until("AWS IoT Provisioning Claim", not_after).map_err(internal)?;
        let cert = self.register_with_status(issued.pem, &issued.der, CertificateStatus::Active)?;
        self.attach_policy(policy, &cert.arn)?;
        Ok((cert, KeyPair { public_key_pem, private_key_pem }))
    }

    /// Deletes a certificate still `PENDING_ACTIVATION` and attached to nothing (its ownership
    /// token expired). Returns whether it was deleted.
    pub fn delete_unclaimed_certificate(&self, id: &str) -> Result<bool, RegistryError> {
        let mut state = self.write();
        let Some(cert) = state.certificates.get(id).cloned() else { return Ok(false) };
        if cert.status != CertificateStatus::PendingActivation
            || state.thing_principals.values().any(|ps| ps.contains(&cert.arn))
            || state.policy_targets.get(&cert.arn).is_some_and(|p| !p.is_empty())
        {
            return Ok(false);
        }
        self.persist(&[del(K_CERT, id)])?;
        state.certificates.remove(id);
        drop(state);
        self.announce(RegistryEvent::CertificateDeleted { certificate_id: id.to_string() });
        Ok(true)
    }

    /// RegisterThing: applies `plan` for certificate `certificate_id`, all or nothing.
    pub fn provision(&self, certificate_id: &str, plan: &Plan) -> Result<Provisioned, RegistryError> {
        let mut state = self.write();
        let mut cert = state
            .certificates
            .get(certificate_id)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(format!("certificate {certificate_id} does not exist")))?;
        if cert.status != CertificateStatus::PendingActivation {
            return Err(RegistryError::CertificateState(format!(
                "certificate {certificate_id} is {}, not PENDING_ACTIVATION",
                cert.status.as_str()
            )));
        }
        let now = self.clock.now_secs();
        let mut ops = Vec::new();
        let mut events = Vec::new();

        // Policies first: they must exist, or their document must be valid.
        let mut new_policies: Vec<(Policy, Arc<PolicyDocument>)> = Vec::new();
        let mut attach: BTreeSet<String> = BTreeSet::new();
        for p in &plan.policies {
            match p {
                PolicySpec::Named(name) => {
                    if !state.policies.contains_key(name) {
                        return Err(RegistryError::NotFound(format!("policy {name} does not exist")));
                    }
                    attach.insert(name.clone());
                }
                PolicySpec::Document { name, document } => {
                    check_policy_name(name)?;
                    let parsed =
                        PolicyDocument::parse(document).map_err(|e| RegistryError::MalformedPolicy(e.to_string()))?;
                    match state.policies.get(name) {
                        Some((existing, _)) if existing.document != *document => {
                            return Err(RegistryError::InvalidRequest(format!(
                                "policy {name} exists with a different document"
                            )));
                        }
                        Some(_) => {}
                        None => {
                            let policy = Policy {
                                name: name.clone(),
                                arn: self.arn(&format!("policy/{name}")),
                                document: document.clone(),
                                default_version_id: "1".into(),
                                creation_date: now,
                                last_modified_date: now,
                            };
                            ops.push(put(K_POLICY, name, &policy));
                            new_policies.push((policy, Arc::new(parsed)));
                        }
                    }
                    attach.insert(name.clone());
                }
            }
        }
        for name in &attach {
            if !state.policy_targets.get(&cert.arn).is_some_and(|p| p.contains(name)) {
                ops.push(put_pair(K_POLICY_TARGET, &cert.arn, name));
            }
        }

        // The thing, as the override settings say.
        let mut thing_after: Option<Thing> = None;
        let mut change = None;
        if let Some(spec) = &plan.thing {
            check_thing_name(&spec.name)?;
            let existing = state.things.get(&spec.name).map(|t| ExistingThing {
                attributes: t.attributes.clone(),
                thing_type: t.thing_type_name.clone(),
                groups: state.thing_groups.get(&spec.name).cloned().unwrap_or_default(),
            });
            let c = thing_change(spec, existing.as_ref())?;
            check_attributes(&c.attributes)?;
            if let Some(t) = &c.thing_type
                && !state.thing_types.contains_key(t)
            {
                return Err(RegistryError::NotFound(format!("Thing Type {t} cannot be found")));
            }
            for g in &c.join {
                if !state.groups.contains_key(g) {
                    return Err(RegistryError::NotFound(format!("Thing group {g} cannot be found")));
                }
            }
            let kept = existing.as_ref().map(|e| e.groups.len()).unwrap_or(0);
            if kept + c.join.len() - c.leave.len().min(kept) > MAX_GROUPS_PER_THING {
                return Err(RegistryError::InvalidRequest(format!(
                    "a thing can be a member of at most {MAX_GROUPS_PER_THING} thing groups"
                )));
            }
            let thing = match state.things.get(&spec.name) {
                Some(old) => {
                    let mut t = old.clone();
                    if t.attributes != c.attributes || t.thing_type_name != c.thing_type {
                        t.attributes = c.attributes.clone();
                        t.thing_type_name = c.thing_type.clone();
                        t.version += 1;
                    }
                    t
                }
                None => Thing {
                    name: spec.name.clone(),
                    id: uuid::Uuid::new_v4().to_string(),
                    arn: self.arn(&format!("thing/{}", spec.name)),
                    thing_type_name: c.thing_type.clone(),
                    attributes: c.attributes.clone(),
                    version: 1,
                },
            };
            ops.push(put(K_THING, &thing.name, &thing));
            for g in &c.join {
                ops.push(put_pair(K_GROUP_MEMBER, g, &thing.name));
            }
            for g in &c.leave {
                ops.push(del_pair(K_GROUP_MEMBER, g, &thing.name));
            }
            ops.push(put_pair(K_THING_PRINCIPAL, &thing.name, &cert.arn));
            thing_after = Some(thing);
            change = Some(c);
        }

        // The certificate: ACTIVE unless the template says INACTIVE.
        let status = match plan.certificate.as_ref().map(|c| c.status.as_str()) {
            Some("INACTIVE") => CertificateStatus::Inactive,
            _ => CertificateStatus::Active,
        };
        cert.status = status;
        cert.last_modified_date = now;
        ops.push(put(K_CERT, &cert.id, &cert));

        self.persist(&ops)?;

        // Stored: now memory, then the events, in the order of the stored changes.
        for (policy, doc) in new_policies {
            state.policies.insert(policy.name.clone(), (policy, doc));
        }
        for name in attach {
            state.policy_targets.entry(cert.arn.clone()).or_default().insert(name);
        }
        let thing_name = thing_after.as_ref().map(|t| t.name.clone());
        if let (Some(thing), Some(c)) = (thing_after, change) {
            let name = thing.name.clone();
            state.things.insert(name.clone(), thing);
            state.thing_principals.entry(name.clone()).or_default().insert(cert.arn.clone());
            for g in &c.leave {
                self.leave(&mut state, g, &name, RemovalCause::Removed);
            }
            for g in &c.join {
                state.link(g, &name);
                events.push(RegistryEvent::ThingAddedToThingGroup { membership: state.membership(g, &name) });
            }
        }
        state.certificates.insert(cert.id.clone(), cert.clone());
        events.push(RegistryEvent::CertificateStatusChanged { certificate_id: cert.id.clone(), status });
        for e in events {
            self.announce(e);
        }
        Ok(Provisioned { thing_name, certificate_status: status })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::provisioning::template::{CertificateFacts, Template};
    use crate::store::Store;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(crate::ca::LocalCa::load_or_create(&dir.path().join("ca")).unwrap());
        let reg = Registry::open(Store::in_memory().unwrap(), ca, crate::time::system(), "us-east-1", "000000000000")
            .unwrap();
        (dir, reg)
    }

    fn plan(reg: &Registry, cert: &Certificate, groups: &str) -> Result<Plan, TemplateError> {
        let body = format!(
            r#"{{"Parameters": {{"Serial": {{"Type": "String"}}}},
                "Resources": {{
                  "thing": {{"Type": "AWS::IoT::Thing", "Properties": {{"ThingName": {{"Fn::Sub": "pump-${{Serial}}"}},
                     "AttributePayload": {{"serial": {{"Ref": "Serial"}}}}, "ThingGroups": {groups}}}}},
                  "cert": {{"Type": "AWS::IoT::Certificate", "Properties": {{"CertificateId": {{"Ref": "AWS::IoT::Certificate::Id"}}, "Status": "ACTIVE"}}}},
                  "policy": {{"Type": "AWS::IoT::Policy", "Properties": {{"PolicyDocument": "{{\"Version\":\"2012-10-17\",\"Statement\":[{{\"Effect\":\"Allow\",\"Action\":\"iot:Connect\",\"Resource\":\"*\"}}]}}"}}}}
                }}}}"#
        );
        let _ = reg;
        Template::parse(&body)?.evaluate(
            &BTreeMap::from([("Serial".to_string(), "7".to_string())]),
            &CertificateFacts { id: cert.id.clone(), subject: cert.subject.clone() },
        )
    }

    #[test]
    fn register_thing_creates_and_attaches_everything_and_activates_the_certificate() {
        let (_dir, reg) = registry();
        reg.create_thing_group("site-a", None, None, Default::default()).unwrap();
        let (cert, _) = reg.create_pending_keys_and_certificate().unwrap();
        assert_eq!(cert.status, CertificateStatus::PendingActivation);
        let done = reg.provision(&cert.id, &plan(&reg, &cert, r#"["site-a"]"#).unwrap()).unwrap();
        assert_eq!(done.thing_name.as_deref(), Some("pump-7"));
        assert_eq!(reg.describe_certificate(&cert.id).unwrap().status, CertificateStatus::Active);
        assert_eq!(reg.list_thing_principals("pump-7").unwrap(), vec![cert.arn.clone()]);
        assert_eq!(reg.list_attached_policies(&cert.arn).unwrap().len(), 1);
        assert!(reg.things_in_thing_group("site-a", false).unwrap().contains("pump-7"));
        let again = reg.provision(&cert.id, &plan(&reg, &cert, "[]").unwrap());
        assert!(matches!(again, Err(RegistryError::CertificateState(_))), "a certificate is provisioned once");
    }

    #[test]
    fn a_replacement_device_reprovisions_the_existing_thing_as_override_settings_say() {
        let (_dir, reg) = registry();
        for g in ["old-site", "new-site"] {
            reg.create_thing_group(g, None, None, Default::default()).unwrap();
        }
        let body = |groups: &str, setting: &str| {
            format!(
                r#"{{"Resources": {{"thing": {{"Type": "AWS::IoT::Thing",
                     "Properties": {{"ThingName": "pump-9", "AttributePayload": {{"model": "b"}}, "ThingGroups": {groups}}},
                     "OverrideSettings": {{"AttributePayload": "{setting}", "ThingGroups": "{setting}"}}}}}}}}"#
            )
        };
        let provision = |groups: &str, setting: &str| {
            let (cert, _) = reg.create_pending_keys_and_certificate().unwrap();
            let facts = CertificateFacts { id: cert.id.clone(), subject: cert.subject.clone() };
            let plan = Template::parse(&body(groups, setting)).unwrap().evaluate(&BTreeMap::new(), &facts).unwrap();
            reg.provision(&cert.id, &plan).map(|_| cert)
        };
        let first = provision(r#"["old-site"]"#, "REPLACE").unwrap();
        let serial = BTreeMap::from([("serial".to_string(), "9".to_string())]);
        reg.update_thing("pump-9", None, false, Some((serial, true)), None).unwrap();
        let mut events = reg.events();

        let second = provision(r#"["new-site"]"#, "REPLACE").unwrap();
        let thing = reg.describe_thing("pump-9").unwrap();
        assert_eq!(thing.attributes, BTreeMap::from([("model".to_string(), "b".to_string())]), "REPLACE");
        assert!(reg.things_in_thing_group("old-site", false).unwrap().is_empty());
        assert!(reg.things_in_thing_group("new-site", false).unwrap().contains("pump-9"));
        let principals = reg.list_thing_principals("pump-9").unwrap();
        assert!(principals.contains(&first.arn) && principals.contains(&second.arn), "the old certificate stays");
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e);
        }
        assert!(seen.iter().any(|e| matches!(e, RegistryEvent::ThingRemovedFromThingGroup { membership, .. } if membership.thing_group_name == "old-site")));
        assert!(seen.iter().any(|e| matches!(e, RegistryEvent::ThingAddedToThingGroup { membership } if membership.thing_group_name == "new-site")));

        let err = provision(r#"["old-site"]"#, "FAIL").unwrap_err();
        assert!(err.to_string().contains("OverrideSettings FAIL"), "{err}");
        assert!(reg.things_in_thing_group("new-site", false).unwrap().contains("pump-9"), "a refusal changes nothing");
    }

    #[test]
    fn a_failing_register_thing_leaves_nothing_behind() {
        let (_dir, reg) = registry();
        let (cert, _) = reg.create_pending_keys_and_certificate().unwrap();
        let err = reg.provision(&cert.id, &plan(&reg, &cert, r#"["no-such-group"]"#).unwrap()).unwrap_err();
        assert!(matches!(err, RegistryError::NotFound(m) if m.contains("no-such-group")));
        assert!(reg.describe_thing("pump-7").is_err(), "no thing");
        assert!(reg.list_policies().is_empty(), "no policy");
        assert_eq!(reg.describe_certificate(&cert.id).unwrap().status, CertificateStatus::PendingActivation);
        assert!(reg.delete_unclaimed_certificate(&cert.id).unwrap());
        assert!(reg.describe_certificate(&cert.id).is_err());
    }
}
