//! The IAM action and resource of every HTTP operation the local cloud serves (other than S3's,
//! which `crate::s3` maps), as the Service Authorization Reference lists them for AWS IoT,
//! AWS IoT data plane, AWS IoT Jobs, AWS IoT Greengrass V2 and AWS Lambda.
//!
//! Operations are found by method and matched route. A caller with temporary credentials is
//! refused any route this table does not name: a route added without its action is closed to
//! scoped callers until it is listed here (the administrator may call everything).

use cloud_api::policy::Decision;

use super::Principal;

/// What an operation acts on, built from the route's path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// No resource type: `*`.
    Any,
    /// `arn:aws:iot:{region}:{account}:{type}/{param}`.
    Iot(&'static str, &'static str),
    /// A path parameter that is a whole ARN already (Greengrass components).
    Arn(&'static str),
    /// `arn:aws:greengrass:{region}:{account}:{kind}:{param}`.
    Greengrass(&'static str, &'static str),
    /// `arn:aws:lambda:{region}:{account}:function:{param}`, or the parameter itself when it is
    /// an ARN already (Lambda takes a function's name or ARN).
    Function(&'static str),
    /// An IoT resource of this type named in the request's body (SearchIndex's index): the route
    /// lets the caller through and the handler authorizes with [`authorize_named`].
    InBody(&'static str),
}

/// One operation: its route, its IAM action and its resource.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// HTTP method.
    pub method: &'static str,
    /// The route as the router declares it.
    pub route: &'static str,
    /// The IAM action, e.g. `iot:DescribeThing`.
    pub action: &'static str,
    /// The resource.
    pub resource: Resource,
}

const fn op(method: &'static str, route: &'static str, action: &'static str, resource: Resource) -> Operation {
    Operation { method, route, action, resource }
}

use Resource::{Any, Arn, Function, Greengrass as Gg, InBody, Iot};

/// Every operation, by route.
pub const OPERATIONS: &[Operation] = &[
    // IoT control plane: things, types, policies, certificates.
    op("GET", "/things", "iot:ListThings", Any),
    op("POST", "/things/{thingName}", "iot:CreateThing", Iot("thing", "thingName")),
    op("GET", "/things/{thingName}", "iot:DescribeThing", Iot("thing", "thingName")),
    op("DELETE", "/things/{thingName}", "iot:DeleteThing", Iot("thing", "thingName")),
    op("PATCH", "/things/{thingName}", "iot:UpdateThing", Iot("thing", "thingName")),
    op("PUT", "/things/{thingName}/principals", "iot:AttachThingPrincipal", Iot("thing", "thingName")),
    op("DELETE", "/things/{thingName}/principals", "iot:DetachThingPrincipal", Iot("thing", "thingName")),
    op("GET", "/things/{thingName}/principals", "iot:ListThingPrincipals", Iot("thing", "thingName")),
    op("POST", "/thing-types/{thingTypeName}", "iot:CreateThingType", Iot("thingtype", "thingTypeName")),
    op("GET", "/thing-types/{thingTypeName}", "iot:DescribeThingType", Iot("thingtype", "thingTypeName")),
    op("GET", "/policies", "iot:ListPolicies", Any),
    op("POST", "/policies/{policyName}", "iot:CreatePolicy", Iot("policy", "policyName")),
    op("GET", "/policies/{policyName}", "iot:GetPolicy", Iot("policy", "policyName")),
    op("DELETE", "/policies/{policyName}", "iot:DeletePolicy", Iot("policy", "policyName")),
    op("PUT", "/target-policies/{policyName}", "iot:AttachPolicy", Iot("policy", "policyName")),
    op("POST", "/target-policies/{policyName}", "iot:DetachPolicy", Iot("policy", "policyName")),
    op("POST", "/attached-policies/{*target}", "iot:ListAttachedPolicies", Any),
    op("POST", "/keys-and-certificate", "iot:CreateKeysAndCertificate", Any),
    op("POST", "/certificates", "iot:CreateCertificateFromCsr", Any),
    op("GET", "/certificates", "iot:ListCertificates", Any),
    op("GET", "/certificates/{certificateId}", "iot:DescribeCertificate", Iot("cert", "certificateId")),
    op("PUT", "/certificates/{certificateId}", "iot:UpdateCertificate", Iot("cert", "certificateId")),
    op("DELETE", "/certificates/{certificateId}", "iot:DeleteCertificate", Iot("cert", "certificateId")),
    op("POST", "/certificate/register-no-ca", "iot:RegisterCertificateWithoutCA", Any),
    op("GET", "/principals/things", "iot:ListPrincipalThings", Any),
    op("GET", "/endpoint", "iot:DescribeEndpoint", Any),
    op("GET", "/event-configurations", "iot:DescribeEventConfigurations", Any),
    op("PATCH", "/event-configurations", "iot:UpdateEventConfigurations", Any),
    // Thing groups (AddThingToThingGroup and RemoveThingFromThingGroup share the PUT route).
    op("GET", "/thing-groups", "iot:ListThingGroups", Any),
    op("GET", "/thing-groups/{thingGroupName}", "iot:DescribeThingGroup", Iot("thinggroup", "thingGroupName")),
    op("POST", "/thing-groups/{thingGroupName}", "iot:CreateThingGroup", Iot("thinggroup", "thingGroupName")),
    op("DELETE", "/thing-groups/{thingGroupName}", "iot:DeleteThingGroup", Iot("thinggroup", "thingGroupName")),
    op("PUT", "/thing-groups/{thingGroupName}", "iot:AddThingToThingGroup", Any),
    op(
        "GET",
        "/thing-groups/{thingGroupName}/things",
        "iot:ListThingsInThingGroup",
        Iot("thinggroup", "thingGroupName"),
    ),
    op("GET", "/things/{thingName}/thing-groups", "iot:ListThingGroupsForThing", Iot("thing", "thingName")),
    // Role aliases.
    op("GET", "/role-aliases", "iot:ListRoleAliases", Any),
    op("POST", "/role-aliases/{roleAlias}", "iot:CreateRoleAlias", Iot("rolealias", "roleAlias")),
    op("GET", "/role-aliases/{roleAlias}", "iot:DescribeRoleAlias", Iot("rolealias", "roleAlias")),
    op("PUT", "/role-aliases/{roleAlias}", "iot:UpdateRoleAlias", Iot("rolealias", "roleAlias")),
    op("DELETE", "/role-aliases/{roleAlias}", "iot:DeleteRoleAlias", Iot("rolealias", "roleAlias")),
    // IoT data plane.
    op("GET", "/things/{thingName}/shadow", "iot:GetThingShadow", Iot("thing", "thingName")),
    op("POST", "/things/{thingName}/shadow", "iot:UpdateThingShadow", Iot("thing", "thingName")),
    op("DELETE", "/things/{thingName}/shadow", "iot:DeleteThingShadow", Iot("thing", "thingName")),
    op(
        "GET",
        "/api/things/shadow/ListNamedShadowsForThing/{thingName}",
        "iot:ListNamedShadowsForThing",
        Iot("thing", "thingName"),
    ),
    op("POST", "/topics/{*topic}", "iot:Publish", Iot("topic", "topic")),
    // Jobs.
    op("GET", "/jobs", "iot:ListJobs", Any),
    op("GET", "/jobs/{jobId}", "iot:DescribeJob", Iot("job", "jobId")),
    op("PUT", "/jobs/{jobId}", "iot:CreateJob", Iot("job", "jobId")),
    op("DELETE", "/jobs/{jobId}", "iot:DeleteJob", Iot("job", "jobId")),
    op("PUT", "/jobs/{jobId}/cancel", "iot:CancelJob", Iot("job", "jobId")),
    op("GET", "/jobs/{jobId}/job-document", "iot:GetJobDocument", Iot("job", "jobId")),
    op("GET", "/jobs/{jobId}/things", "iot:ListJobExecutionsForJob", Iot("job", "jobId")),
    op("GET", "/things/{thingName}/jobs", "iot:ListJobExecutionsForThing", Iot("thing", "thingName")),
    op("GET", "/things/{thingName}/jobs/{jobId}", "iot:DescribeJobExecution", Iot("thing", "thingName")),
    op("PUT", "/things/{thingName}/jobs/{jobId}/cancel", "iot:CancelJobExecution", Iot("thing", "thingName")),
    // Topic rules.
    op("GET", "/rules", "iot:ListTopicRules", Any),
    op("GET", "/rules/{ruleName}", "iot:GetTopicRule", Iot("rule", "ruleName")),
    op("POST", "/rules/{ruleName}", "iot:CreateTopicRule", Iot("rule", "ruleName")),
    op("PATCH", "/rules/{ruleName}", "iot:ReplaceTopicRule", Iot("rule", "ruleName")),
    op("DELETE", "/rules/{ruleName}", "iot:DeleteTopicRule", Iot("rule", "ruleName")),
    op("POST", "/rules/{ruleName}/enable", "iot:EnableTopicRule", Iot("rule", "ruleName")),
    op("POST", "/rules/{ruleName}/disable", "iot:DisableTopicRule", Iot("rule", "ruleName")),
    // Fleet indexing and fleet metrics.
    op("GET", "/indexing/config", "iot:GetIndexingConfiguration", Any),
    op("POST", "/indexing/config", "iot:UpdateIndexingConfiguration", Any),
    op("GET", "/indices", "iot:ListIndices", Any),
    op("POST", "/indices/search", "iot:SearchIndex", InBody("index")),
    op("POST", "/indices/statistics", "iot:GetStatistics", InBody("index")),
    op("GET", "/indices/{indexName}", "iot:DescribeIndex", Iot("index", "indexName")),
    op("GET", "/fleet-metrics", "iot:ListFleetMetrics", Any),
    op("PUT", "/fleet-metric/{metricName}", "iot:CreateFleetMetric", Iot("fleetmetric", "metricName")),
    op("GET", "/fleet-metric/{metricName}", "iot:DescribeFleetMetric", Iot("fleetmetric", "metricName")),
    op("PATCH", "/fleet-metric/{metricName}", "iot:UpdateFleetMetric", Iot("fleetmetric", "metricName")),
    op("DELETE", "/fleet-metric/{metricName}", "iot:DeleteFleetMetric", Iot("fleetmetric", "metricName")),
    // Fleet provisioning.
    op("POST", "/provisioning-templates", "iot:CreateProvisioningTemplate", Any),
    op("GET", "/provisioning-templates", "iot:ListProvisioningTemplates", Any),
    op(
        "GET",
        "/provisioning-templates/{templateName}",
        "iot:DescribeProvisioningTemplate",
        Iot("provisioningtemplate", "templateName"),
    ),
    op(
        "PATCH",
        "/provisioning-templates/{templateName}",
        "iot:UpdateProvisioningTemplate",
        Iot("provisioningtemplate", "templateName"),
    ),
    op(
        "DELETE",
        "/provisioning-templates/{templateName}",
        "iot:DeleteProvisioningTemplate",
        Iot("provisioningtemplate", "templateName"),
    ),
    op(
        "POST",
        "/provisioning-templates/{templateName}/versions",
        "iot:CreateProvisioningTemplateVersion",
        Iot("provisioningtemplate", "templateName"),
    ),
    op(
        "GET",
        "/provisioning-templates/{templateName}/versions",
        "iot:ListProvisioningTemplateVersions",
        Iot("provisioningtemplate", "templateName"),
    ),
    op(
        "GET",
        "/provisioning-templates/{templateName}/versions/{versionId}",
        "iot:DescribeProvisioningTemplateVersion",
        Iot("provisioningtemplate", "templateName"),
    ),
    op(
        "DELETE",
        "/provisioning-templates/{templateName}/versions/{versionId}",
        "iot:DeleteProvisioningTemplateVersion",
        Iot("provisioningtemplate", "templateName"),
    ),
    op(
        "POST",
        "/provisioning-templates/{templateName}/provisioning-claim",
        "iot:CreateProvisioningClaim",
        Iot("provisioningtemplate", "templateName"),
    ),
    // Greengrass V2 control plane.
    op("POST", "/greengrass/v2/createComponentVersion", "greengrass:CreateComponentVersion", Any),
    op("GET", "/greengrass/v2/components", "greengrass:ListComponents", Any),
    op("GET", "/greengrass/v2/components/{arn}", "greengrass:GetComponent", Arn("arn")),
    op("DELETE", "/greengrass/v2/components/{arn}", "greengrass:DeleteComponent", Arn("arn")),
    op("GET", "/greengrass/v2/components/{arn}/metadata", "greengrass:DescribeComponent", Arn("arn")),
    op("GET", "/greengrass/v2/components/{arn}/versions", "greengrass:ListComponentVersions", Arn("arn")),
    op("GET", "/greengrass/v2/deployments", "greengrass:ListDeployments", Any),
    op("POST", "/greengrass/v2/deployments", "greengrass:CreateDeployment", Any),
    op(
        "GET",
        "/greengrass/v2/deployments/{deploymentId}",
        "greengrass:GetDeployment",
        Gg("deployments", "deploymentId"),
    ),
    op(
        "DELETE",
        "/greengrass/v2/deployments/{deploymentId}",
        "greengrass:DeleteDeployment",
        Gg("deployments", "deploymentId"),
    ),
    op(
        "POST",
        "/greengrass/v2/deployments/{deploymentId}/cancel",
        "greengrass:CancelDeployment",
        Gg("deployments", "deploymentId"),
    ),
    op("GET", "/greengrass/v2/coreDevices", "greengrass:ListCoreDevices", Any),
    op(
        "GET",
        "/greengrass/v2/coreDevices/{coreDeviceThingName}",
        "greengrass:GetCoreDevice",
        Gg("coreDevices", "coreDeviceThingName"),
    ),
    op(
        "GET",
        "/greengrass/v2/coreDevices/{coreDeviceThingName}/installedComponents",
        "greengrass:ListInstalledComponents",
        Gg("coreDevices", "coreDeviceThingName"),
    ),
    op(
        "GET",
        "/greengrass/v2/coreDevices/{coreDeviceThingName}/effectiveDeployments",
        "greengrass:ListEffectiveDeployments",
        Gg("coreDevices", "coreDeviceThingName"),
    ),
    // Lambda.
    op("GET", "/2015-03-31/functions", "lambda:ListFunctions", Any),
    op("POST", "/2015-03-31/functions", "lambda:CreateFunction", Any),
    op("GET", "/2015-03-31/functions/{FunctionName}", "lambda:GetFunction", Function("FunctionName")),
    op("DELETE", "/2015-03-31/functions/{FunctionName}", "lambda:DeleteFunction", Function("FunctionName")),
    op(
        "GET",
        "/2015-03-31/functions/{FunctionName}/configuration",
        "lambda:GetFunctionConfiguration",
        Function("FunctionName"),
    ),
    op(
        "PUT",
        "/2015-03-31/functions/{FunctionName}/configuration",
        "lambda:UpdateFunctionConfiguration",
        Function("FunctionName"),
    ),
    op("PUT", "/2015-03-31/functions/{FunctionName}/code", "lambda:UpdateFunctionCode", Function("FunctionName")),
    op("POST", "/2015-03-31/functions/{FunctionName}/invocations", "lambda:InvokeFunction", Function("FunctionName")),
    op("GET", "/2015-03-31/functions/{FunctionName}/policy", "lambda:GetPolicy", Function("FunctionName")),
    op("POST", "/2015-03-31/functions/{FunctionName}/policy", "lambda:AddPermission", Function("FunctionName")),
    op(
        "DELETE",
        "/2015-03-31/functions/{FunctionName}/policy/{StatementId}",
        "lambda:RemovePermission",
        Function("FunctionName"),
    ),
];

/// The operation at `method` and matched `route`.
pub fn find(method: &str, route: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|o| o.method == method && o.route == route)
}

impl Operation {
    /// The action, and the resource ARN built from the route's `params`.
    pub fn action_and_resource(&self, params: &[(&str, &str)], region: &str, account: &str) -> (&'static str, String) {
        let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v).unwrap_or_default();
        let action = match (self.action, param("thingGroupName")) {
            ("iot:AddThingToThingGroup", "removeThingFromThingGroup") => "iot:RemoveThingFromThingGroup",
            ("iot:AddThingToThingGroup", "addThingToThingGroup") => "iot:AddThingToThingGroup",
            ("iot:AddThingToThingGroup", _) => "iot:UpdateThingGroup",
            (action, _) => action,
        };
        let resource = match self.resource {
            Any | InBody(_) => "*".to_owned(),
            Iot(kind, name) => format!("arn:aws:iot:{region}:{account}:{kind}/{}", param(name)),
            Arn(name) => param(name).to_owned(),
            Gg(kind, name) => format!("arn:aws:greengrass:{region}:{account}:{kind}:{}", param(name)),
            Function(name) => {
                // The route's parameters are as sent: an ARN arrives with its colons encoded.
                let function = percent_encoding::percent_decode_str(param(name)).decode_utf8_lossy();
                if function.starts_with("arn:") {
                    function.into_owned()
                } else {
                    format!("arn:aws:lambda:{region}:{account}:function:{function}")
                }
            }
        };
        (action, resource)
    }
}

/// Whether `principal` may perform `action` on `resource`; the refusal is AWS's message.
pub fn authorize_named(principal: &Principal, action: &str, resource: &str) -> Result<(), String> {
    let Principal::Role(session) = principal else { return Ok(()) };
    match session.decide(action, resource) {
        Decision::Allow => Ok(()),
        Decision::ExplicitDeny => Err(format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} with an explicit deny in an identity-based policy",
            session.assumed_role_arn
        )),
        Decision::ImplicitDeny => Err(format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action",
            session.assumed_role_arn
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_listed_once_and_builds_its_arn() {
        for (i, a) in OPERATIONS.iter().enumerate() {
            assert!(
                OPERATIONS[i + 1..].iter().all(|b| (a.method, a.route) != (b.method, b.route)),
                "{} {} is listed twice",
                a.method,
                a.route
            );
            let service = a.action.split(':').next().unwrap();
            assert!(matches!(service, "iot" | "greengrass" | "lambda"), "{}", a.action);
        }
        let describe = find("GET", "/things/{thingName}").unwrap();
        assert_eq!(
            describe.action_and_resource(&[("thingName", "pump-1")], "us-east-1", "0"),
            ("iot:DescribeThing", "arn:aws:iot:us-east-1:0:thing/pump-1".to_owned())
        );
        let groups = find("PUT", "/thing-groups/{thingGroupName}").unwrap();
        assert_eq!(
            groups.action_and_resource(&[("thingGroupName", "removeThingFromThingGroup")], "r", "a").0,
            "iot:RemoveThingFromThingGroup"
        );
        let core = find("GET", "/greengrass/v2/coreDevices/{coreDeviceThingName}").unwrap();
        assert_eq!(
            core.action_and_resource(&[("coreDeviceThingName", "site-1")], "r", "a").1,
            "arn:aws:greengrass:r:a:coreDevices:site-1"
        );
        let invoke = find("POST", "/2015-03-31/functions/{FunctionName}/invocations").unwrap();
        assert_eq!(
            invoke.action_and_resource(&[("FunctionName", "ingest")], "r", "a"),
            ("lambda:InvokeFunction", "arn:aws:lambda:r:a:function:ingest".to_owned())
        );
        assert_eq!(
            invoke
                .action_and_resource(&[("FunctionName", "arn%3Aaws%3Alambda%3Ar%3Aa%3Afunction%3Aingest")], "r", "a")
                .1,
            "arn:aws:lambda:r:a:function:ingest"
        );
        assert!(find("GET", "/nowhere").is_none());
    }
}
