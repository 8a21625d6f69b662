//! `accessControl`: which component may call which IPC operation on which resource.
//!
//! Follows the Greengrass developer guide, "Authorize components to perform IPC
//! operations", checked against the nucleus's `AuthorizationHandler` and `WildcardTrie`
//! and the services that call it:
//! - a component's configuration holds `accessControl: {service: {policyId:
//!   {policyDescription, operations: [...], resources: [...]}}}`; the component is the
//!   principal of its own policies;
//! - an operation matches when it is listed (`aws.greengrass#PublishToTopic`) or `*`;
//! - resources: `*` matches any run of characters (slashes included) anywhere in the
//!   string; `?` is **not** a wildcard; `${*}`, `${?}`, `${$}` (any `${c}`) stand for the
//!   literal character;
//! - MQTT wildcards in resources are wildcards only for `aws.greengrass.ipc.mqttproxy`
//!   (the nucleus checks it with `ResourceLookupPolicy.MQTT_STYLE`): `+` filling a whole
//!   level matches one level, `#` as the whole last level matches that level's parent and
//!   everything below (`a/#` matches `a`, `a/b`, `a/b/c`). Elsewhere (local pub/sub) `+` and
//!   `#` are plain characters: a policy must name `test/#` for a component to subscribe to
//!   the filter `test/#`, and `test/#` does not allow subscribing to `test/x`;
//! - the resource checked is the string in the request: the topic or topic filter as given
//!   (so subscribing to `a/+` needs a resource that covers the string `a/+`), the shadow
//!   topic prefix `$aws/things/{thing}/shadow[/name/{shadow}]`, the target component name
//!   for `aws.greengrass.Cli` operations;
//! - `aws.greengrass.Cli` operations: Greengrass CLI clients (principal `greengrass-cli#…`,
//!   see [`crate::core::cli`]) may call them all; components need a policy. Their resource is
//!   the target component (RestartComponent, StopComponent), the deployment id
//!   (GetLocalDeploymentStatus) or `*` (CreateLocalDeployment, ListLocalDeployments);
//! - recipe variables in resources (`{iot:thingName}`) are expanded before policies get
//!   here.
//!
//! Operations that need no policy (the nucleus checks none): UpdateState,
//! GetConfiguration and SubscribeToConfigurationUpdate (of any component),
//! UpdateConfiguration (own configuration only), SubscribeToComponentUpdates,
//! DeferComponentUpdate, SubscribeToValidateConfigurationUpdates and
//! SendConfigurationValidityReport (a component answers for itself). See
//! [`needs_authorization`].

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Local publish/subscribe.
pub const PUBSUB: &str = "aws.greengrass.ipc.pubsub";
/// AWS IoT Core MQTT through the core.
pub const MQTT_PROXY: &str = "aws.greengrass.ipc.mqttproxy";
/// Local shadows.
pub const SHADOW_MANAGER: &str = "aws.greengrass.ShadowManager";
/// The Greengrass CLI's IPC operations (RestartComponent, StopComponent, local deployments).
pub const CLI: &str = "aws.greengrass.Cli";
/// The principal prefix of Greengrass CLI clients (nucleus `GREENGRASS_CLI_CLIENT_ID_PREFIX`).
pub const CLI_CLIENT_PREFIX: &str = "greengrass-cli#";

/// True for a Greengrass CLI client (or the CLI service itself): the nucleus lets these call
/// every `aws.greengrass.Cli` operation without a policy (`CLIEventStreamAgent.authorizeRequest`);
/// any other component needs an `aws.greengrass.Cli` policy.
pub fn is_cli_client(principal: &str) -> bool {
    principal.starts_with(CLI_CLIENT_PREFIX) || principal == CLI
}

/// One policy of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The IPC service it grants access to.
    pub service: String,
    /// Its id (unique per core).
    pub policy_id: String,
    /// Its description.
    pub description: Option<String>,
    /// Operations (`aws.greengrass#Op` or `*`).
    pub operations: Vec<String>,
    /// Resources (patterns).
    pub resources: Vec<String>,
}

/// How resource patterns are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupPolicy {
    /// `*` is a wildcard; `+` and `#` are characters.
    Standard,
    /// `*`, and valid MQTT `+` / `#`, are wildcards.
    Mqtt,
}

impl LookupPolicy {
    /// The lookup the nucleus uses for a service.
    pub fn for_service(service: &str) -> Self {
        if service == MQTT_PROXY { LookupPolicy::Mqtt } else { LookupPolicy::Standard }
    }
}

/// Whether an operation is checked against `accessControl` at all (see the module doc).
pub fn needs_authorization(operation: &str) -> bool {
    !matches!(
        operation,
        "aws.greengrass#UpdateState"
            | "aws.greengrass#GetConfiguration"
            | "aws.greengrass#UpdateConfiguration"
            | "aws.greengrass#SubscribeToConfigurationUpdate"
            | "aws.greengrass#SubscribeToComponentUpdates"
            | "aws.greengrass#DeferComponentUpdate"
            | "aws.greengrass#SubscribeToValidateConfigurationUpdates"
            | "aws.greengrass#SendConfigurationValidityReport"
    )
}

/// The nucleus's denial message, as UnauthorizedError carries it.
pub fn denial_message(component: &str, service: &str, operation: &str, resource: &str) -> String {
    format!("Principal {component} is not authorized to perform {service}:{operation} on resource {resource}")
}

/// Parses a component's `accessControl` out of its configuration. Malformed entries are
/// skipped (the nucleus logs and ignores them); a policy without operations grants nothing.
pub fn parse_policies(configuration: &Value) -> Vec<Policy> {
    let Some(services) = configuration.get("accessControl").and_then(Value::as_object) else {
        return Vec::new();
    };
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (service, policies) in services {
        let Some(policies) = policies.as_object() else { continue };
        for (policy_id, body) in policies {
            let operations = strings(body.get("operations"));
            if policy_id.is_empty() || operations.is_empty() {
                continue;
            }
            out.push(Policy {
                service: service.clone(),
                policy_id: policy_id.clone(),
                description: body.get("policyDescription").and_then(Value::as_str).map(str::to_owned),
                operations,
                resources: strings(body.get("resources")),
            });
        }
    }
    out
}

/// Every component's policies. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct AccessControl {
    by_component: Arc<RwLock<HashMap<String, Vec<Policy>>>>,
}

impl AccessControl {
    /// No policies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a component's policies from its configuration (replacing older ones).
    pub fn set_component(&self, component: &str, configuration: &Value) {
        self.set_policies(component, parse_policies(configuration));
    }

    /// Sets a component's policies.
    pub fn set_policies(&self, component: &str, policies: Vec<Policy>) {
        self.by_component.write().unwrap_or_else(|e| e.into_inner()).insert(component.to_owned(), policies);
    }

    /// Forgets a component.
    pub fn remove_component(&self, component: &str) {
        self.by_component.write().unwrap_or_else(|e| e.into_inner()).remove(component);
    }

    /// Whether `component` may perform `operation` of `service` on `resource`.
    pub fn is_authorized(&self, component: &str, service: &str, operation: &str, resource: &str) -> bool {
        let map = self.by_component.read().unwrap_or_else(|e| e.into_inner());
        let Some(policies) = map.get(component) else { return false };
        let lookup = LookupPolicy::for_service(service);
        policies.iter().filter(|p| p.service == service).any(|p| {
            p.operations.iter().any(|o| o == "*" || o == operation)
                && p.resources.iter().any(|r| resource_matches(r, resource, lookup))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    Star,
    /// `+` filling a whole level (MQTT lookup only).
    Plus,
    /// `#` as the whole last level (MQTT lookup only).
    Hash,
}

fn tokenize(pattern: &str, lookup: LookupPolicy) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // `${c}` escapes one character.
        if c == '$' && i + 3 < chars.len() && chars[i + 1] == '{' && chars[i + 3] == '}' {
            out.push(Token::Char(chars[i + 2]));
            i += 4;
            continue;
        }
        let level_start = i == 0 || chars[i - 1] == '/';
        let level_end = i + 1 == chars.len() || chars[i + 1] == '/';
        let token = match c {
            '*' => Token::Star,
            '+' if lookup == LookupPolicy::Mqtt && level_start && level_end => Token::Plus,
            '#' if lookup == LookupPolicy::Mqtt && level_start && i + 1 == chars.len() => Token::Hash,
            c => Token::Char(c),
        };
        out.push(token);
        i += 1;
    }
    out
}

/// Whether a policy resource pattern allows `resource` under `lookup`.
pub fn resource_matches(pattern: &str, resource: &str, lookup: LookupPolicy) -> bool {
    let tokens = tokenize(pattern, lookup);
    let text: Vec<char> = resource.chars().collect();
    match_tokens(&tokens, &text)
}

fn match_tokens(tokens: &[Token], text: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    match first {
        Token::Char(c) => {
            // `a/#` also matches `a`: the `/` before a final `#` may be missing with the rest.
            if *c == '/' && rest == [Token::Hash] && text.is_empty() {
                return true;
            }
            text.first() == Some(c) && match_tokens(rest, &text[1..])
        }
        Token::Star => (0..=text.len()).any(|n| match_tokens(rest, &text[n..])),
        Token::Plus => {
            let level_len = text.iter().position(|c| *c == '/').unwrap_or(text.len());
            (0..=level_len).any(|n| match_tokens(rest, &text[n..]))
        }
        Token::Hash => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_patterns_follow_the_nucleus_wildcard_rules() {
        use LookupPolicy::{Mqtt, Standard};
        let cases: &[(&str, &str, LookupPolicy, bool)] = &[
            ("test/topic", "test/topic", Standard, true),
            ("test/topic", "test/topic2", Standard, false),
            ("*", "anything/at/all", Standard, true),
            ("test/*", "test/a/b", Standard, true),
            ("test/*/end", "test/a/b/end", Standard, true),
            ("*/x", "a/b/x", Standard, true),
            ("te?t", "test", Standard, false),
            ("te?t", "te?t", Standard, true),
            ("a${*}", "a*", Standard, true),
            ("a${*}", "ab", Standard, false),
            // pubsub: MQTT wildcards are literal characters.
            ("test/#", "test/#", Standard, true),
            ("test/#", "test/x", Standard, false),
            ("test/+", "test/x", Standard, false),
            ("test/+", "test/+", Standard, true),
            // mqttproxy: MQTT wildcards match.
            ("test/#", "test/x/y", Mqtt, true),
            ("test/#", "test", Mqtt, true),
            ("test/#", "testing", Mqtt, false),
            ("test/+/z", "test/x/z", Mqtt, true),
            ("test/+/z", "test/x/y/z", Mqtt, false),
            ("test/+", "test/+", Mqtt, true),
            ("test/#", "test/+", Mqtt, true),
            ("test/x", "test/+", Mqtt, false),
            ("#", "any/thing", Mqtt, true),
            ("test/a+", "test/ab", Mqtt, false),
            ("test/a+", "test/a+", Mqtt, true),
            ("$aws/things/pump/shadow*", "$aws/things/pump/shadow/name/x", Standard, true),
        ];
        for (pattern, resource, lookup, want) in cases {
            assert_eq!(resource_matches(pattern, resource, *lookup), *want, "{pattern} vs {resource} ({lookup:?})");
        }
    }

    #[test]
    fn policies_allow_listed_operations_and_star() {
        let config = json!({"accessControl": {
            PUBSUB: {"p1": {"policyDescription": "d", "operations": ["aws.greengrass#PublishToTopic"], "resources": ["pump/*"]}},
            MQTT_PROXY: {"p2": {"operations": ["*"], "resources": ["dt/pump/+/telemetry"]}},
            SHADOW_MANAGER: {"p3": {"operations": ["aws.greengrass#GetThingShadow"], "resources": ["$aws/things/core/shadow/name/pump"]}},
            "bad": "not an object"
        }});
        let ac = AccessControl::new();
        ac.set_component("A", &config);
        let cases: &[(&str, &str, &str, &str, bool)] = &[
            ("A", PUBSUB, "aws.greengrass#PublishToTopic", "pump/readings", true),
            ("A", PUBSUB, "aws.greengrass#SubscribeToTopic", "pump/readings", false),
            ("A", PUBSUB, "aws.greengrass#PublishToTopic", "other", false),
            ("A", MQTT_PROXY, "aws.greengrass#PublishToIoTCore", "dt/pump/x/telemetry", true),
            ("A", MQTT_PROXY, "aws.greengrass#SubscribeToIoTCore", "dt/pump/x/telemetry", true),
            ("A", SHADOW_MANAGER, "aws.greengrass#GetThingShadow", "$aws/things/core/shadow/name/pump", true),
            ("A", SHADOW_MANAGER, "aws.greengrass#UpdateThingShadow", "$aws/things/core/shadow/name/pump", false),
            ("A", SHADOW_MANAGER, "aws.greengrass#GetThingShadow", "$aws/things/core/shadow", false),
            ("B", PUBSUB, "aws.greengrass#PublishToTopic", "pump/readings", false),
            // A policy for one service grants nothing on another.
            ("A", PUBSUB, "aws.greengrass#PublishToTopic", "dt/pump/x/telemetry", false),
        ];
        for (c, s, o, r, want) in cases {
            assert_eq!(ac.is_authorized(c, s, o, r), *want, "{c} {s} {o} {r}");
        }
    }

    #[test]
    fn operations_without_policy_are_the_nucleus_ones() {
        assert!(!needs_authorization("aws.greengrass#UpdateState"));
        assert!(!needs_authorization("aws.greengrass#GetConfiguration"));
        assert!(!needs_authorization("aws.greengrass#DeferComponentUpdate"));
        assert!(!needs_authorization("aws.greengrass#SubscribeToValidateConfigurationUpdates"));
        assert!(!needs_authorization("aws.greengrass#SendConfigurationValidityReport"));
        assert!(needs_authorization("aws.greengrass#PublishToTopic"));
        assert!(needs_authorization("aws.greengrass#RestartComponent"));
        assert!(needs_authorization("aws.greengrass#CreateLocalDeployment"));
        assert!(is_cli_client("greengrass-cli#user-1000") && is_cli_client(CLI));
        assert!(!is_cli_client("com.example.A") && !is_cli_client("greengrass-cli"));
        assert_eq!(
            denial_message("A", PUBSUB, "aws.greengrass#PublishToTopic", "t"),
            "Principal A is not authorized to perform aws.greengrass.ipc.pubsub:aws.greengrass#PublishToTopic on resource t"
        );
    }
}
