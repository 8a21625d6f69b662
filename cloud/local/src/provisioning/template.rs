//! The provisioning-template engine, pure: parse a template body, evaluate it against the
//! device's parameters and its certificate, and decide what changes an existing thing gets.
//! No registry, no I/O: [`super`] applies the result to the registry in one transaction.
//!
//! Follows the AWS IoT Core Developer Guide, "Provisioning templates": sections `Parameters`
//! (`Type`, `Default`, `AllowedValues`), `Mappings`, `Conditions`, `Resources` (types
//! `AWS::IoT::Thing`, `AWS::IoT::Certificate`, `AWS::IoT::Policy`, each optionally guarded by a
//! `Condition`), `DeviceConfiguration`; the intrinsic functions `Ref`, `Fn::Join`, `Fn::Select`,
//! `Fn::Split`, `Fn::Sub`, `Fn::FindInMap`, `Fn::Base64`, `Fn::If`, `Fn::Equals`, `Fn::Not`,
//! `Fn::And`, `Fn::Or` (and `Condition` references inside conditions); the pseudo parameters
//! `AWS::IoT::Certificate::Id` and the certificate's subject fields; and `OverrideSettings`
//! (`DO_NOTHING`, `REPLACE`, `FAIL`, `MERGE`; `MERGE` only for `AttributePayload` and
//! `ThingGroups`).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use serde_json::{Map, Value};

/// Why a template or a provisioning request is refused. The text says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template body is not a valid template (fix the template).
    #[error("invalid template: {0}")]
    Invalid(String),
    /// The request's parameters do not fit the template (fix the parameters).
    #[error("invalid parameters: {0}")]
    Parameters(String),
    /// The existing thing conflicts with the template's `FAIL` override setting.
    #[error("{0}")]
    Conflict(String),
}

fn invalid(msg: impl Into<String>) -> TemplateError {
    TemplateError::Invalid(msg.into())
}

/// A parameter's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// `String`.
    String,
    /// `Number`: the value must parse as a number.
    Number,
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Type.
    pub ty: ParamType,
    /// `Default`, used when the request does not give the parameter.
    pub default: Option<String>,
    /// `AllowedValues`, when declared.
    pub allowed: Option<Vec<String>>,
}

/// What `OverrideSettings` says to do with an existing thing's property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Override {
    /// Keep the existing value (the default).
    #[default]
    DoNothing,
    /// Use the template's value.
    Replace,
    /// Refuse provisioning when the values differ.
    Fail,
    /// Union of existing and new (attributes, thing groups).
    Merge,
}

impl Override {
    fn parse(s: &str, field: &str) -> Result<Self, TemplateError> {
        match s {
            "DO_NOTHING" => Ok(Override::DoNothing),
            "REPLACE" => Ok(Override::Replace),
            "FAIL" => Ok(Override::Fail),
            "MERGE" if field == "AttributePayload" || field == "ThingGroups" => Ok(Override::Merge),
            "MERGE" => Err(invalid(format!(
                "OverrideSettings {field}: MERGE is allowed only for AttributePayload and ThingGroups"
            ))),
            other => Err(invalid(format!(
                "OverrideSettings {field}: {other} is not one of DO_NOTHING, REPLACE, FAIL, MERGE"
            ))),
        }
    }
}

/// A resource as written in the template (properties unevaluated).
#[derive(Debug, Clone, PartialEq)]
struct Resource {
    logical_id: String,
    kind: Kind,
    condition: Option<String>,
    properties: Map<String, Value>,
    overrides: Overrides,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Thing,
    Certificate,
    Policy,
}

/// The `OverrideSettings` of a thing resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overrides {
    /// For `AttributePayload`.
    pub attributes: Override,
    /// For `ThingTypeName`.
    pub thing_type: Override,
    /// For `ThingGroups`.
    pub groups: Override,
}

/// A parsed, validated template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    params: BTreeMap<String, ParamSpec>,
    mappings: Map<String, Value>,
    conditions: Map<String, Value>,
    resources: Vec<Resource>,
    device_configuration: Map<String, Value>,
}

/// What the template is evaluated against besides the parameters: the certificate being
/// provisioned (its id and subject fields, for the `AWS::IoT::Certificate::*` pseudo parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateFacts {
    /// Certificate id.
    pub id: String,
    /// Subject fields by AWS's names (`CommonName`, `Country`, `Organization`, …).
    pub subject: BTreeMap<String, String>,
}

/// The thing a template asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingSpec {
    /// ThingName.
    pub name: String,
    /// AttributePayload.
    pub attributes: BTreeMap<String, String>,
    /// ThingTypeName.
    pub thing_type: Option<String>,
    /// ThingGroups.
    pub groups: BTreeSet<String>,
    /// OverrideSettings.
    pub overrides: Overrides,
}

/// A policy a template attaches to the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySpec {
    /// An existing policy, by name.
    Named(String),
    /// A policy made from this document (created if absent) under `name`.
    Document {
        /// Policy name (given, or derived from the logical id and the document).
        name: String,
        /// Policy document.
        document: String,
    },
}

/// The certificate settings a template asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    /// CertificateId (must be the certificate being provisioned).
    pub id: String,
    /// Status to set: `ACTIVE` or `INACTIVE`.
    pub status: String,
}

/// The evaluated template: what to create, attach and answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The thing, if the template has one (whose condition holds).
    pub thing: Option<ThingSpec>,
    /// The certificate settings, if any.
    pub certificate: Option<CertificateSpec>,
    /// Policies to attach to the certificate.
    pub policies: Vec<PolicySpec>,
    /// `DeviceConfiguration`, evaluated, for RegisterThing's reply.
    pub device_configuration: BTreeMap<String, String>,
}

/// An existing thing, as much of it as the override settings compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingThing {
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Thing type.
    pub thing_type: Option<String>,
    /// Groups it is a direct member of.
    pub groups: BTreeSet<String>,
}

/// What happens to the thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingChange {
    /// Whether the thing is created (else it exists and is updated).
    pub create: bool,
    /// Its attributes afterwards.
    pub attributes: BTreeMap<String, String>,
    /// Its thing type afterwards.
    pub thing_type: Option<String>,
    /// Groups to join.
    pub join: BTreeSet<String>,
    /// Groups to leave.
    pub leave: BTreeSet<String>,
}

const MAX_DEPTH: usize = 32;

impl Template {
    /// Parses and validates a template body (JSON).
    pub fn parse(body: &str) -> Result<Template, TemplateError> {
        let doc: Value = serde_json::from_str(body).map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
        let Value::Object(doc) = doc else { return Err(invalid("the body must be a JSON object")) };
        for key in doc.keys() {
            if !["Parameters", "Mappings", "Conditions", "Resources", "DeviceConfiguration"].contains(&key.as_str()) {
                return Err(invalid(format!("unknown section {key}")));
            }
        }
        let section = |name: &str| -> Result<Map<String, Value>, TemplateError> {
            match doc.get(name) {
                None => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m.clone()),
                Some(_) => Err(invalid(format!("{name} must be an object"))),
            }
        };
        let mut params = BTreeMap::new();
        for (name, spec) in section("Parameters")? {
            params.insert(name.clone(), parse_param(&name, &spec)?);
        }
        let mappings = section("Mappings")?;
        let conditions = section("Conditions")?;
        let device_configuration = section("DeviceConfiguration")?;
        let mut resources = Vec::new();
        for (logical_id, r) in section("Resources")? {
            resources.push(parse_resource(&logical_id, &r, &conditions)?);
        }
        for kind in [Kind::Thing, Kind::Certificate] {
            if resources.iter().filter(|r| r.kind == kind).count() > 1 {
                return Err(invalid(format!("a template may declare at most one {}", kind_name(kind))));
            }
        }
        Ok(Template { params, mappings, conditions, resources, device_configuration })
    }

    /// The declared parameters.
    pub fn parameters(&self) -> &BTreeMap<String, ParamSpec> {
        &self.params
    }

    /// Evaluates the template for one device.
    pub fn evaluate(&self, given: &BTreeMap<String, String>, cert: &CertificateFacts) -> Result<Plan, TemplateError> {
        let mut values = BTreeMap::new();
        for (name, spec) in &self.params {
            let value = match (given.get(name), &spec.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) => {
                    return Err(TemplateError::Parameters(format!("the required parameter {name} is missing")));
                }
            };
            if spec.ty == ParamType::Number && value.trim().parse::<f64>().is_err() {
                return Err(TemplateError::Parameters(format!("parameter {name} must be a Number, got {value:?}")));
            }
            if let Some(allowed) = &spec.allowed
                && !allowed.contains(&value)
            {
                return Err(TemplateError::Parameters(format!(
                    "parameter {name} must be one of {allowed:?}, got {value:?}"
                )));
            }
            values.insert(name.clone(), value);
        }
        let ev = Evaluator { tpl: self, params: &values, cert };
        let mut plan =
            Plan { thing: None, certificate: None, policies: Vec::new(), device_configuration: BTreeMap::new() };
        for r in &self.resources {
            if let Some(c) = &r.condition
                && !ev.condition(c, 0)?
            {
                continue;
            }
            let prop = |name: &str| -> Result<Option<Value>, TemplateError> {
                r.properties.get(name).map(|v| ev.eval(v, 0)).transpose()
            };
            match r.kind {
                Kind::Thing => {
                    let name = prop("ThingName")?
                        .map(|v| string_of(&v, "ThingName"))
                        .transpose()?
                        .ok_or_else(|| invalid(format!("{}: ThingName is required", r.logical_id)))?;
                    let attributes = match prop("AttributePayload")? {
                        None => BTreeMap::new(),
                        Some(Value::Object(m)) => m
                            .iter()
                            .map(|(k, v)| Ok((k.clone(), string_of(v, &format!("AttributePayload.{k}"))?)))
                            .collect::<Result<_, TemplateError>>()?,
                        Some(_) => {
                            return Err(invalid(format!("{}: AttributePayload must be an object", r.logical_id)));
                        }
                    };
                    let thing_type = prop("ThingTypeName")?.map(|v| string_of(&v, "ThingTypeName")).transpose()?;
                    let groups = match prop("ThingGroups")? {
                        None => BTreeSet::new(),
                        Some(v) => list_of(&v, "ThingGroups")?.into_iter().collect(),
                    };
                    plan.thing = Some(ThingSpec { name, attributes, thing_type, groups, overrides: r.overrides });
                }
                Kind::Certificate => {
                    let id = prop("CertificateId")?
                        .map(|v| string_of(&v, "CertificateId"))
                        .transpose()?
                        .ok_or_else(|| invalid(format!("{}: CertificateId is required", r.logical_id)))?;
                    if id != cert.id {
                        return Err(invalid(format!(
                            "{}: CertificateId must be the certificate being provisioned ({{\"Ref\": \"AWS::IoT::Certificate::Id\"}})",
                            r.logical_id
                        )));
                    }
                    // AWS's own examples write "Active": the status is read case-insensitively.
                    let status = prop("Status")?
                        .map(|v| string_of(&v, "Status"))
                        .transpose()?
                        .map(|s| s.to_ascii_uppercase())
                        .unwrap_or_else(|| "ACTIVE".into());
                    if status != "ACTIVE" && status != "INACTIVE" {
                        return Err(invalid(format!(
                            "{}: Status must be ACTIVE or INACTIVE, got {status}",
                            r.logical_id
                        )));
                    }
                    plan.certificate = Some(CertificateSpec { id, status });
                }
                Kind::Policy => {
                    let name = prop("PolicyName")?.map(|v| string_of(&v, "PolicyName")).transpose()?;
                    let document = match prop("PolicyDocument")? {
                        None => None,
                        Some(Value::String(s)) => Some(s),
                        Some(v @ Value::Object(_)) => Some(v.to_string()),
                        Some(_) => {
                            return Err(invalid(format!(
                                "{}: PolicyDocument must be a string or an object",
                                r.logical_id
                            )));
                        }
                    };
                    plan.policies.push(match (name, document) {
                        (Some(name), None) => PolicySpec::Named(name),
                        (name, Some(document)) => {
                            let name = name.unwrap_or_else(|| derived_policy_name(&r.logical_id, &document));
                            PolicySpec::Document { name, document }
                        }
                        (None, None) => {
                            return Err(invalid(format!(
                                "{}: a policy needs PolicyName or PolicyDocument",
                                r.logical_id
                            )));
                        }
                    });
                }
            }
        }
        for (k, v) in &self.device_configuration {
            let v = ev.eval(v, 0)?;
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            plan.device_configuration.insert(k.clone(), s);
        }
        Ok(plan)
    }
}

/// The name of a policy made from a `PolicyDocument` without a `PolicyName`: the logical id
/// and a digest of the document, so the same document always maps to the same policy.
fn derived_policy_name(logical_id: &str, document: &str) -> String {
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(document.as_bytes()));
    format!("{logical_id}-{}", &digest[..16])
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Thing => "AWS::IoT::Thing",
        Kind::Certificate => "AWS::IoT::Certificate",
        Kind::Policy => "AWS::IoT::Policy",
    }
}

fn parse_param(name: &str, spec: &Value) -> Result<ParamSpec, TemplateError> {
    let Value::Object(spec) = spec else { return Err(invalid(format!("parameter {name} must be an object"))) };
    let ty = match spec.get("Type").and_then(Value::as_str) {
        Some("String") => ParamType::String,
        Some("Number") => ParamType::Number,
        Some(other) => return Err(invalid(format!("parameter {name}: Type {other} is not String or Number"))),
        None => return Err(invalid(format!("parameter {name} has no Type"))),
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let default = match spec.get("Default") {
        None => None,
        Some(v) => {
            Some(scalar(v).ok_or_else(|| invalid(format!("parameter {name}: Default must be a string or a number")))?)
        }
    };
    let allowed = match spec.get("AllowedValues") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| scalar(v).ok_or_else(|| invalid(format!("parameter {name}: AllowedValues must hold strings"))))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(invalid(format!("parameter {name}: AllowedValues must be a list"))),
    };
    if let (Some(d), Some(a)) = (&default, &allowed)
        && !a.contains(d)
    {
        return Err(invalid(format!("parameter {name}: Default {d:?} is not among AllowedValues")));
    }
    Ok(ParamSpec { ty, default, allowed })
}

fn parse_resource(logical_id: &str, r: &Value, conditions: &Map<String, Value>) -> Result<Resource, TemplateError> {
    let Value::Object(r) = r else { return Err(invalid(format!("resource {logical_id} must be an object"))) };
    let kind = match r.get("Type").and_then(Value::as_str) {
        Some("AWS::IoT::Thing") => Kind::Thing,
        Some("AWS::IoT::Certificate") => Kind::Certificate,
        Some("AWS::IoT::Policy") => Kind::Policy,
        Some(other) => return Err(invalid(format!("resource {logical_id}: unsupported Type {other}"))),
        None => return Err(invalid(format!("resource {logical_id} has no Type"))),
    };
    let condition = match r.get("Condition") {
        None => None,
        Some(Value::String(c)) if conditions.contains_key(c) => Some(c.clone()),
        Some(Value::String(c)) => return Err(invalid(format!("resource {logical_id}: unknown condition {c}"))),
        Some(_) => return Err(invalid(format!("resource {logical_id}: Condition must be a name"))),
    };
    let properties = match r.get("Properties") {
        None => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return Err(invalid(format!("resource {logical_id}: Properties must be an object"))),
    };
    let mut overrides = Overrides::default();
    match r.get("OverrideSettings") {
        None => {}
        Some(Value::Object(o)) if kind == Kind::Thing => {
            for (field, v) in o {
                let s = v.as_str().ok_or_else(|| invalid(format!("OverrideSettings {field} must be a string")))?;
                let setting = Override::parse(s, field)?;
                match field.as_str() {
                    "AttributePayload" => overrides.attributes = setting,
                    "ThingTypeName" => overrides.thing_type = setting,
                    "ThingGroups" => overrides.groups = setting,
                    other => return Err(invalid(format!("OverrideSettings: unknown property {other}"))),
                }
            }
        }
        // A certificate's `Status` setting (bulk registration and JITP templates carry it): a
        // fleet-provisioned certificate is always new, so there is nothing to override.
        Some(Value::Object(o)) if kind == Kind::Certificate => {
            for (field, v) in o {
                let s = v.as_str().ok_or_else(|| invalid(format!("OverrideSettings {field} must be a string")))?;
                if field != "Status" {
                    return Err(invalid(format!("OverrideSettings: unknown certificate property {field}")));
                }
                Override::parse(s, field)?;
            }
        }
        Some(_) => {
            return Err(invalid(format!(
                "resource {logical_id}: OverrideSettings is an object, on a thing or a certificate only"
            )));
        }
    }
    Ok(Resource { logical_id: logical_id.to_string(), kind, condition, properties, overrides })
}

fn string_of(v: &Value, what: &str) -> Result<String, TemplateError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(invalid(format!("{what} must be a string"))),
    }
}

fn list_of(v: &Value, what: &str) -> Result<Vec<String>, TemplateError> {
    match v {
        Value::Array(a) => a.iter().map(|x| string_of(x, what)).collect(),
        _ => Err(invalid(format!("{what} must be a list"))),
    }
}

struct Evaluator<'a> {
    tpl: &'a Template,
    params: &'a BTreeMap<String, String>,
    cert: &'a CertificateFacts,
}

impl Evaluator<'_> {
    fn reference(&self, name: &str) -> Result<String, TemplateError> {
        if let Some(v) = self.params.get(name) {
            return Ok(v.clone());
        }
        if name == "AWS::IoT::Certificate::Id" {
            return Ok(self.cert.id.clone());
        }
        if let Some(field) = name.strip_prefix("AWS::IoT::Certificate::") {
            return self
                .cert
                .subject
                .get(field)
                .cloned()
                .ok_or_else(|| TemplateError::Parameters(format!("the certificate has no {field}")));
        }
        Err(invalid(format!("Ref to {name}, which is neither a parameter nor a pseudo parameter")))
    }

    fn condition(&self, name: &str, depth: usize) -> Result<bool, TemplateError> {
        let c = self.tpl.conditions.get(name).ok_or_else(|| invalid(format!("unknown condition {name}")))?;
        match self.eval(c, depth + 1)? {
            Value::Bool(b) => Ok(b),
            _ => Err(invalid(format!("condition {name} is not a condition function"))),
        }
    }

    fn boolean(&self, v: &Value, depth: usize) -> Result<bool, TemplateError> {
        match self.eval(v, depth + 1)? {
            Value::Bool(b) => Ok(b),
            Value::String(s) if s == "true" => Ok(true),
            Value::String(s) if s == "false" => Ok(false),
            other => Err(invalid(format!("expected a condition, got {other}"))),
        }
    }

    fn string(&self, v: &Value, depth: usize, what: &str) -> Result<String, TemplateError> {
        string_of(&self.eval(v, depth + 1)?, what)
    }

    fn list(&self, v: &Value, depth: usize, what: &str) -> Result<Vec<String>, TemplateError> {
        list_of(&self.eval(v, depth + 1)?, what)
    }

    fn eval(&self, v: &Value, depth: usize) -> Result<Value, TemplateError> {
        if depth > MAX_DEPTH {
            return Err(invalid("functions nested too deep"));
        }
        match v {
            Value::Array(a) => {
                a.iter().map(|x| self.eval(x, depth + 1)).collect::<Result<Vec<_>, _>>().map(Value::Array)
            }
            Value::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().expect("one entry");
                match k.as_str() {
                    "Ref" => {
                        let name = arg.as_str().ok_or_else(|| invalid("Ref takes a name"))?;
                        Ok(Value::String(self.reference(name)?))
                    }
                    "Condition" => {
                        let name = arg.as_str().ok_or_else(|| invalid("Condition takes a name"))?;
                        Ok(Value::Bool(self.condition(name, depth)?))
                    }
                    "Fn::Join" => {
                        let [delim, list] = args::<2>(arg, "Fn::Join")?;
                        let delim = delim.as_str().ok_or_else(|| invalid("Fn::Join: the delimiter is a string"))?;
                        Ok(Value::String(self.list(list, depth, "Fn::Join")?.join(delim)))
                    }
                    "Fn::Select" => {
                        let [index, list] = args::<2>(arg, "Fn::Select")?;
                        let index = self.string(index, depth, "Fn::Select index")?;
                        let index: usize =
                            index.parse().map_err(|_| invalid(format!("Fn::Select: index {index} is not a number")))?;
                        let list = self.list(list, depth, "Fn::Select")?;
                        list.get(index).cloned().map(Value::String).ok_or_else(|| {
                            invalid(format!("Fn::Select: index {index} is out of range ({} items)", list.len()))
                        })
                    }
                    "Fn::Split" => {
                        let [delim, s] = args::<2>(arg, "Fn::Split")?;
                        let delim = delim.as_str().ok_or_else(|| invalid("Fn::Split: the delimiter is a string"))?;
                        if delim.is_empty() {
                            return Err(invalid("Fn::Split: the delimiter is empty"));
                        }
                        let s = self.string(s, depth, "Fn::Split")?;
                        Ok(Value::Array(s.split(delim).map(|p| Value::String(p.to_string())).collect()))
                    }
                    "Fn::Sub" => self.sub(arg, depth),
                    "Fn::FindInMap" => {
                        let [map, k1, k2] = args::<3>(arg, "Fn::FindInMap")?;
                        let map = self.string(map, depth, "Fn::FindInMap map")?;
                        let k1 = self.string(k1, depth, "Fn::FindInMap key")?;
                        let k2 = self.string(k2, depth, "Fn::FindInMap key")?;
                        self.tpl
                            .mappings
                            .get(&map)
                            .and_then(|m| m.get(&k1))
                            .and_then(|m| m.get(&k2))
                            .cloned()
                            .ok_or_else(|| {
                                TemplateError::Parameters(format!("Fn::FindInMap: {map}/{k1}/{k2} is not in Mappings"))
                            })
                    }
                    "Fn::Base64" => {
                        let s = self.string(arg, depth, "Fn::Base64")?;
                        Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(s)))
                    }
                    "Fn::If" => {
                        let [cond, then, otherwise] = args::<3>(arg, "Fn::If")?;
                        let cond =
                            cond.as_str().ok_or_else(|| invalid("Fn::If: the first argument is a condition name"))?;
                        if self.condition(cond, depth)? {
                            self.eval(then, depth + 1)
                        } else {
                            self.eval(otherwise, depth + 1)
                        }
                    }
                    "Fn::Equals" => {
                        let [a, b] = args::<2>(arg, "Fn::Equals")?;
                        Ok(Value::Bool(self.eval(a, depth + 1)? == self.eval(b, depth + 1)?))
                    }
                    "Fn::Not" => {
                        let [c] = args::<1>(arg, "Fn::Not")?;
                        Ok(Value::Bool(!self.boolean(c, depth)?))
                    }
                    "Fn::And" | "Fn::Or" => {
                        let items = arg.as_array().ok_or_else(|| invalid(format!("{k} takes a list")))?;
                        if !(2..=10).contains(&items.len()) {
                            return Err(invalid(format!("{k} takes 2 to 10 conditions")));
                        }
                        let mut out = k == "Fn::And";
                        for c in items {
                            let b = self.boolean(c, depth)?;
                            out = if k == "Fn::And" { out && b } else { out || b };
                        }
                        Ok(Value::Bool(out))
                    }
                    f if f.starts_with("Fn::") => {
                        Err(invalid(format!("{f} is not supported in provisioning templates")))
                    }
                    _ => self.eval_object(m, depth),
                }
            }
            Value::Object(m) => self.eval_object(m, depth),
            other => Ok(other.clone()),
        }
    }

    fn eval_object(&self, m: &Map<String, Value>, depth: usize) -> Result<Value, TemplateError> {
        let mut out = Map::new();
        for (k, v) in m {
            out.insert(k.clone(), self.eval(v, depth + 1)?);
        }
        Ok(Value::Object(out))
    }

    /// `Fn::Sub`: `"text ${Name}"` or `["text ${Var}", {"Var": value}]`; `${!Literal}` stays `${Literal}`.
    fn sub(&self, arg: &Value, depth: usize) -> Result<Value, TemplateError> {
        let (text, vars) = match arg {
            Value::String(s) => (s.as_str(), Map::new()),
            Value::Array(a) if a.len() == 2 => {
                let text = a[0].as_str().ok_or_else(|| invalid("Fn::Sub: the first argument is a string"))?;
                let vars = a[1].as_object().cloned().ok_or_else(|| invalid("Fn::Sub: the second argument is a map"))?;
                (text, vars)
            }
            _ => return Err(invalid("Fn::Sub takes a string or [string, map]")),
        };
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| invalid("Fn::Sub: unterminated ${"))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(&self.string(v, depth, "Fn::Sub variable")?);
            } else {
                out.push_str(&self.reference(name)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }
}

fn args<'a, const N: usize>(arg: &'a Value, f: &str) -> Result<[&'a Value; N], TemplateError> {
    let items = arg.as_array().ok_or_else(|| invalid(format!("{f} takes a list of {N}")))?;
    let refs: Vec<&Value> = items.iter().collect();
    refs.try_into().map_err(|_| invalid(format!("{f} takes {N} arguments, got {}", items.len())))
}

/// Decides what happens to the thing, given what exists: a new thing gets everything the
/// template says; an existing one follows `OverrideSettings` per property.
pub fn thing_change(spec: &ThingSpec, existing: Option<&ExistingThing>) -> Result<ThingChange, TemplateError> {
    let Some(old) = existing else {
        return Ok(ThingChange {
            create: true,
            attributes: spec.attributes.clone(),
            thing_type: spec.thing_type.clone(),
            join: spec.groups.clone(),
            leave: BTreeSet::new(),
        });
    };
    let fail = |what: &str| {
        TemplateError::Conflict(format!("thing {} exists with a different {what} (OverrideSettings FAIL)", spec.name))
    };
    let attributes = match spec.overrides.attributes {
        Override::DoNothing => old.attributes.clone(),
        Override::Replace => spec.attributes.clone(),
        Override::Fail if old.attributes != spec.attributes => return Err(fail("AttributePayload")),
        Override::Fail => old.attributes.clone(),
        Override::Merge => {
            let mut merged = old.attributes.clone();
            merged.extend(spec.attributes.clone());
            merged
        }
    };
    let thing_type = match spec.overrides.thing_type {
        Override::DoNothing | Override::Merge => old.thing_type.clone(),
        Override::Replace => spec.thing_type.clone(),
        Override::Fail if old.thing_type != spec.thing_type => return Err(fail("ThingTypeName")),
        Override::Fail => old.thing_type.clone(),
    };
    let (join, leave) = match spec.overrides.groups {
        Override::DoNothing => (BTreeSet::new(), BTreeSet::new()),
        Override::Replace => (
            spec.groups.difference(&old.groups).cloned().collect(),
            old.groups.difference(&spec.groups).cloned().collect(),
        ),
        Override::Fail if old.groups != spec.groups => return Err(fail("ThingGroups")),
        Override::Fail => (BTreeSet::new(), BTreeSet::new()),
        Override::Merge => (spec.groups.difference(&old.groups).cloned().collect(), BTreeSet::new()),
    };
    Ok(ThingChange { create: false, attributes, thing_type, join, leave })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cert() -> CertificateFacts {
        CertificateFacts {
            id: "c0ffee".into(),
            subject: BTreeMap::from([("CommonName".to_string(), "pump-42".to_string())]),
        }
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The fleet-provisioning example of the AWS IoT Developer Guide ("Provisioning templates",
    /// "Fleet provisioning"), with its `Fn::Join` thing name and `DeviceConfiguration`.
    const GUIDE_EXAMPLE: &str = r#"{
      "Parameters": {
        "ThingName": {"Type": "String"},
        "SerialNumber": {"Type": "String"},
        "DeviceLocation": {"Type": "String"}
      },
      "Mappings": {"LocationTable": {"Seattle": {"LocationUrl": "https://example.aws"}}},
      "Resources": {
        "thing": {
          "Type": "AWS::IoT::Thing",
          "Properties": {
            "AttributePayload": {"version": "v1", "serialNumber": {"Ref": "SerialNumber"}},
            "ThingName": {"Fn::Join": ["", ["ThingPrefix_", {"Ref": "SerialNumber"}]]},
            "ThingGroups": ["v1-lightbulbs", "WA"]
          },
          "OverrideSettings": {"AttributePayload": "MERGE", "ThingTypeName": "REPLACE", "ThingGroups": "DO_NOTHING"}
        },
        "certificate": {
          "Type": "AWS::IoT::Certificate",
          "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"}
        },
        "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "DevicePolicy"}}
      },
      "DeviceConfiguration": {
        "FallbackUrl": "https://www.example.com/test-site",
        "LocationUrl": {"Fn::FindInMap": ["LocationTable", {"Ref": "DeviceLocation"}, "LocationUrl"]}
      }
    }"#;

    #[test]
    fn certificate_status_is_read_case_insensitively_and_checked() {
        // AWS's own example writes "Active"; anything but ACTIVE or INACTIVE is refused.
        let plan = Template::parse(GUIDE_EXAMPLE)
            .unwrap()
            .evaluate(&params(&[("ThingName", "x"), ("SerialNumber", "42"), ("DeviceLocation", "Seattle")]), &cert())
            .unwrap();
        assert_eq!(plan.certificate.unwrap().status, "ACTIVE");
        let err = Template::parse(&GUIDE_EXAMPLE.replace("\"Active\"", "\"Revoked\""))
            .unwrap()
            .evaluate(&params(&[("ThingName", "x"), ("SerialNumber", "42"), ("DeviceLocation", "Seattle")]), &cert());
        assert!(matches!(err, Err(TemplateError::Invalid(m)) if m.contains("ACTIVE or INACTIVE")));
    }

    #[test]
    fn guide_example_evaluates_to_thing_certificate_policy_and_configuration() {
        let tpl = Template::parse(GUIDE_EXAMPLE).unwrap();
        let plan = tpl
            .evaluate(&params(&[("ThingName", "x"), ("SerialNumber", "42"), ("DeviceLocation", "Seattle")]), &cert())
            .unwrap();
        let thing = plan.thing.unwrap();
        assert_eq!(thing.name, "ThingPrefix_42");
        assert_eq!(thing.attributes, params(&[("version", "v1"), ("serialNumber", "42")]));
        assert_eq!(thing.groups, BTreeSet::from(["v1-lightbulbs".to_string(), "WA".to_string()]));
        assert_eq!(
            thing.overrides,
            Overrides { attributes: Override::Merge, thing_type: Override::Replace, groups: Override::DoNothing }
        );
        assert_eq!(plan.certificate, Some(CertificateSpec { id: "c0ffee".into(), status: "ACTIVE".into() }));
        assert_eq!(plan.policies, vec![PolicySpec::Named("DevicePolicy".into())]);
        assert_eq!(
            plan.device_configuration,
            params(&[("FallbackUrl", "https://www.example.com/test-site"), ("LocationUrl", "https://example.aws")])
        );
    }

    /// Parameters a table case gives.
    type Given = &'static [(&'static str, &'static str)];

    fn eval_one(expr: Value, given: &[(&str, &str)]) -> Result<Value, TemplateError> {
        let body = json!({
            "Parameters": {"A": {"Type": "String", "Default": "a,b,c"}, "N": {"Type": "Number", "Default": "2"}},
            "Mappings": {"M": {"k": {"v": "found"}}},
            "Conditions": {
                "IsProd": {"Fn::Equals": [{"Ref": "A"}, "prod"]},
                "NotProd": {"Fn::Not": [{"Condition": "IsProd"}]},
                "Both": {"Fn::And": [{"Condition": "IsProd"}, {"Fn::Equals": ["x", "x"]}]},
                "Either": {"Fn::Or": [{"Condition": "IsProd"}, {"Fn::Equals": ["x", "x"]}]}
            },
            "DeviceConfiguration": {"out": expr}
        });
        let tpl = Template::parse(&body.to_string())?;
        let plan = tpl.evaluate(&params(given), &cert())?;
        Ok(Value::String(plan.device_configuration["out"].clone()))
    }

    #[test]
    fn each_intrinsic_function_evaluates_as_documented() {
        let s = |x: &str| Ok(Value::String(x.to_string()));
        let cases: Vec<(Value, Given, Result<Value, TemplateError>)> = vec![
            (json!({"Ref": "A"}), &[], s("a,b,c")),
            (json!({"Ref": "A"}), &[("A", "given")], s("given")),
            (json!({"Ref": "AWS::IoT::Certificate::Id"}), &[], s("c0ffee")),
            (json!({"Ref": "AWS::IoT::Certificate::CommonName"}), &[], s("pump-42")),
            (json!({"Fn::Join": ["-", ["x", {"Ref": "N"}, "y"]]}), &[], s("x-2-y")),
            (json!({"Fn::Select": [1, {"Fn::Split": [",", {"Ref": "A"}]}]}), &[], s("b")),
            (json!({"Fn::Select": ["2", ["p", "q", "r"]]}), &[], s("r")),
            (json!({"Fn::Sub": "pump-${A}-${!Literal}"}), &[("A", "7")], s("pump-7-${Literal}")),
            (json!({"Fn::Sub": ["${X}/${AWS::IoT::Certificate::Id}", {"X": {"Ref": "N"}}]}), &[], s("2/c0ffee")),
            (json!({"Fn::FindInMap": ["M", "k", "v"]}), &[], s("found")),
            (json!({"Fn::Base64": "hello"}), &[], s("aGVsbG8=")),
            (json!({"Fn::If": ["IsProd", "p", "np"]}), &[("A", "prod")], s("p")),
            (json!({"Fn::If": ["IsProd", "p", "np"]}), &[], s("np")),
            (json!({"Fn::If": ["NotProd", "yes", "no"]}), &[], s("yes")),
            (json!({"Fn::If": ["Both", "yes", "no"]}), &[("A", "prod")], s("yes")),
            (json!({"Fn::If": ["Both", "yes", "no"]}), &[], s("no")),
            (json!({"Fn::If": ["Either", "yes", "no"]}), &[], s("yes")),
        ];
        for (expr, given, want) in cases {
            assert_eq!(eval_one(expr.clone(), given), want, "{expr}");
        }
    }

    #[test]
    fn bad_expressions_and_parameters_get_clear_errors() {
        let cases: Vec<(Value, Given, &str)> = vec![
            (json!({"Ref": "Nope"}), &[], "neither a parameter"),
            (json!({"Fn::Select": [9, ["a"]]}), &[], "out of range"),
            (json!({"Fn::Join": ["-"]}), &[], "takes 2 arguments"),
            (json!({"Fn::GetAZs": ""}), &[], "not supported"),
            (json!({"Fn::If": ["Missing", "a", "b"]}), &[], "unknown condition"),
            (json!({"Fn::Sub": "${A"}), &[], "unterminated"),
            (json!({"Fn::FindInMap": ["M", "k", "zz"]}), &[], "not in Mappings"),
            (json!({"Ref": "A"}), &[("N", "two")], "must be a Number"),
        ];
        for (expr, given, want) in cases {
            let err = eval_one(expr.clone(), given).expect_err(&expr.to_string());
            assert!(err.to_string().contains(want), "{expr}: {err}");
        }
    }

    #[test]
    fn parameters_take_defaults_and_honour_allowed_values() {
        let tpl = Template::parse(
            r#"{"Parameters": {"Env": {"Type": "String", "AllowedValues": ["dev", "prod"], "Default": "dev"},
                               "Serial": {"Type": "String"}},
                "DeviceConfiguration": {"env": {"Ref": "Env"}}}"#,
        )
        .unwrap();
        assert_eq!(tpl.evaluate(&params(&[("Serial", "1")]), &cert()).unwrap().device_configuration["env"], "dev");
        assert!(
            matches!(tpl.evaluate(&params(&[("Serial", "1"), ("Env", "qa")]), &cert()), Err(TemplateError::Parameters(m)) if m.contains("one of"))
        );
        assert!(
            matches!(tpl.evaluate(&params(&[]), &cert()), Err(TemplateError::Parameters(m)) if m.contains("Serial is missing"))
        );
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let cases = [
            ("not json", "not JSON"),
            ("[]", "JSON object"),
            (r#"{"Outputs": {}}"#, "unknown section Outputs"),
            (r#"{"Parameters": {"P": {"Type": "List"}}}"#, "not String or Number"),
            (
                r#"{"Parameters": {"P": {"Type": "String", "Default": "x", "AllowedValues": ["y"]}}}"#,
                "not among AllowedValues",
            ),
            (r#"{"Resources": {"r": {"Type": "AWS::S3::Bucket"}}}"#, "unsupported Type"),
            (r#"{"Resources": {"a": {"Type": "AWS::IoT::Thing"}, "b": {"Type": "AWS::IoT::Thing"}}}"#, "at most one"),
            (
                r#"{"Resources": {"a": {"Type": "AWS::IoT::Thing", "OverrideSettings": {"ThingTypeName": "MERGE"}}}}"#,
                "MERGE is allowed only",
            ),
            (
                r#"{"Resources": {"a": {"Type": "AWS::IoT::Thing", "OverrideSettings": {"ThingGroups": "SKIP"}}}}"#,
                "not one of",
            ),
            (r#"{"Resources": {"a": {"Type": "AWS::IoT::Thing", "Condition": "Nope"}}}"#, "unknown condition"),
        ];
        for (body, want) in cases {
            let err = Template::parse(body).expect_err(body);
            assert!(err.to_string().contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn resources_whose_condition_is_false_are_skipped_and_policies_resolve() {
        let tpl = Template::parse(
            r#"{"Parameters": {"Mode": {"Type": "String"}},
                "Conditions": {"WithThing": {"Fn::Equals": [{"Ref": "Mode"}, "thing"]}},
                "Resources": {
                  "t": {"Type": "AWS::IoT::Thing", "Condition": "WithThing", "Properties": {"ThingName": "t1"}},
                  "p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": "{\"Version\":\"2012-10-17\",\"Statement\":[]}"}},
                  "c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": "other"}}
                }}"#,
        )
        .unwrap();
        let err = tpl.evaluate(&params(&[("Mode", "none")]), &cert()).unwrap_err();
        assert!(err.to_string().contains("must be the certificate being provisioned"), "{err}");
        let tpl = Template::parse(
            r#"{"Parameters": {"Mode": {"Type": "String"}},
                "Conditions": {"WithThing": {"Fn::Equals": [{"Ref": "Mode"}, "thing"]}},
                "Resources": {
                  "t": {"Type": "AWS::IoT::Thing", "Condition": "WithThing", "Properties": {"ThingName": "t1"}},
                  "p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": "{}"}}
                }}"#,
        )
        .unwrap();
        let plan = tpl.evaluate(&params(&[("Mode", "none")]), &cert()).unwrap();
        assert!(plan.thing.is_none());
        assert!(
            matches!(&plan.policies[..], [PolicySpec::Document { name, document }] if name.starts_with("p-") && document == "{}")
        );
        assert_eq!(tpl.evaluate(&params(&[("Mode", "thing")]), &cert()).unwrap().thing.unwrap().name, "t1");
    }

    #[test]
    fn a_policy_document_may_be_an_object_as_in_the_cli_example() {
        let tpl = Template::parse(
            r#"{"Resources": {"policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument":
                 {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["iot:Publish"],
                  "Resource": ["arn:aws:iot:us-east-1:123456789012:topic/foo/bar"]}]}}}}}"#,
        )
        .unwrap();
        let plan = tpl.evaluate(&params(&[]), &cert()).unwrap();
        let [PolicySpec::Document { name, document }] = &plan.policies[..] else { panic!("{:?}", plan.policies) };
        assert!(name.starts_with("policy-") && name.len() == "policy-".len() + 16, "{name}");
        assert_eq!(serde_json::from_str::<Value>(document).unwrap()["Statement"][0]["Action"], json!(["iot:Publish"]));
    }

    fn spec(o: Override) -> ThingSpec {
        ThingSpec {
            name: "t".into(),
            attributes: params(&[("a", "new"), ("b", "2")]),
            thing_type: Some("NewType".into()),
            groups: BTreeSet::from(["g2".to_string(), "g3".to_string()]),
            overrides: Overrides {
                attributes: o,
                thing_type: if o == Override::Merge { Override::Replace } else { o },
                groups: o,
            },
        }
    }

    fn existing() -> ExistingThing {
        ExistingThing {
            attributes: params(&[("a", "old"), ("c", "3")]),
            thing_type: Some("OldType".into()),
            groups: BTreeSet::from(["g1".to_string(), "g2".to_string()]),
        }
    }

    #[test]
    fn override_settings_decide_what_an_existing_thing_becomes() {
        let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let new = thing_change(&spec(Override::DoNothing), None).unwrap();
        assert!(new.create && new.join == set(&["g2", "g3"]) && new.thing_type.as_deref() == Some("NewType"));

        let keep = thing_change(&spec(Override::DoNothing), Some(&existing())).unwrap();
        assert_eq!(
            (keep.create, &keep.attributes, keep.thing_type.as_deref()),
            (false, &existing().attributes, Some("OldType"))
        );
        assert!(keep.join.is_empty() && keep.leave.is_empty());

        let replace = thing_change(&spec(Override::Replace), Some(&existing())).unwrap();
        assert_eq!(replace.attributes, params(&[("a", "new"), ("b", "2")]));
        assert_eq!(replace.thing_type.as_deref(), Some("NewType"));
        assert_eq!((replace.join, replace.leave), (set(&["g3"]), set(&["g1"])));

        let merge = thing_change(&spec(Override::Merge), Some(&existing())).unwrap();
        assert_eq!(merge.attributes, params(&[("a", "new"), ("b", "2"), ("c", "3")]));
        assert_eq!((merge.join, merge.leave), (set(&["g3"]), set(&[])));

        let fail = thing_change(&spec(Override::Fail), Some(&existing())).unwrap_err();
        assert!(matches!(fail, TemplateError::Conflict(m) if m.contains("AttributePayload")));
        let same = ThingSpec {
            attributes: existing().attributes,
            thing_type: existing().thing_type,
            groups: existing().groups,
            ..spec(Override::Fail)
        };
        assert!(thing_change(&same, Some(&existing())).is_ok(), "FAIL lets an identical thing through");
    }
}
