//! The benchmark's components as Greengrass recipes (JSON; the simulated core reads JSON and
//! YAML alike). Each recipe declares the accessControl its component needs, so every call pays
//! for the core's authorization like a real component's.

use serde_json::{Value, json};

use crate::plan::Plan;

/// The version of every benchmark component.
pub const VERSION: &str = "1.0.0";
/// The Rust round-trip component.
pub const RUST_RTT: &str = "com.example.bench.RustRtt";
/// The Python round-trip component.
pub const PYTHON_RTT: &str = "com.example.bench.PythonRtt";
/// The pub/sub publisher.
pub const PUBLISHER: &str = "com.example.bench.Publisher";
/// The pub/sub subscriber.
pub const SUBSCRIBER: &str = "com.example.bench.Subscriber";
/// File name of the Rust component's artifact.
pub const RUST_ARTIFACT: &str = "ipc-bench-component";
/// File name of the Python component's artifact.
pub const PYTHON_ARTIFACT: &str = "ipc_bench_component.py";
/// The configuration key read by GetConfiguration.
pub const CONFIG_KEY: &str = "settings";

/// Topics of the scenarios.
pub mod topics {
    /// PublishToTopic round trips (nobody subscribes).
    pub const RTT: &str = "bench/rtt";
    /// Pub/sub data messages.
    pub const DATA: &str = "bench/data";
    /// Publisher → subscriber: end of a phase.
    pub const CTL: &str = "bench/ctl";
    /// Subscriber → publisher: acknowledgements.
    pub const ACK: &str = "bench/ack";
    /// What idle components subscribe to.
    pub const IDLE: &str = "bench/idle";
}

/// The name of the `i`th idle component (1-based): `com.example.bench.Idle01`.
pub fn idle_name(i: usize) -> String {
    format!("com.example.bench.Idle{i:02}")
}

/// One benchmark component: its recipe and the artifact it needs.
#[derive(Debug, Clone)]
pub struct Component {
    /// Component name.
    pub name: String,
    /// File name of its one artifact.
    pub artifact: &'static str,
    /// The recipe.
    pub recipe: Value,
}

/// A pub/sub policy of `name` for `operations` on `topics`.
fn pubsub_policy(name: &str, id: u32, operations: &[&str], topics: &[&str]) -> (String, Value) {
    let ops: Vec<String> = operations.iter().map(|o| format!("aws.greengrass#{o}")).collect();
    (format!("{name}:pubsub:{id}"), json!({"policyDescription": "ipc-bench", "operations": ops, "resources": topics}))
}

fn recipe(name: &str, description: &str, policies: Vec<(String, Value)>, artifact: &str, run: String) -> Value {
    let mut pubsub = serde_json::Map::new();
    for (id, p) in policies {
        pubsub.insert(id, p);
    }
    let executable = !artifact.ends_with(".py");
    let mut permission = json!({"Read": "OWNER"});
    if executable {
        permission["Execute"] = json!("OWNER");
    }
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": VERSION,
        "ComponentDescription": description,
        "ComponentPublisher": "Example",
        "ComponentConfiguration": {
            "DefaultConfiguration": {
                CONFIG_KEY: {"intervalMs": 1000, "topic": "pump/readings", "limits": {"minRpm": 0, "maxRpm": 3000}},
                "accessControl": {"aws.greengrass.ipc.pubsub": pubsub}
            }
        },
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Artifacts": [{
                "URI": format!("s3://DOC-EXAMPLE-BUCKET/artifacts/{name}/{VERSION}/{artifact}"),
                "Permission": permission
            }],
            "Lifecycle": {"Run": run}
        }]
    })
}

/// `'{artifacts:path}/ipc-bench-component' --ready '{work:path}/ready.json' <mode args>`.
fn rust_run(mode: &str) -> String {
    format!("'{{artifacts:path}}/{RUST_ARTIFACT}' --ready '{{work:path}}/ready.json' {mode}")
}

fn rtt_args(plan: &Plan) -> String {
    format!(
        "--go '{{work:path}}/go' --result '{{work:path}}/result.json' --warmup {} --calls {} --key {CONFIG_KEY} --topic {}",
        plan.rtt_warmup,
        plan.rtt_calls,
        topics::RTT
    )
}

/// The Rust round-trip component.
pub fn rust_rtt(plan: &Plan) -> Component {
    let policies = vec![pubsub_policy(RUST_RTT, 1, &["PublishToTopic"], &[topics::RTT])];
    let run = rust_run(&format!("rtt {}", rtt_args(plan)));
    let recipe = recipe(RUST_RTT, "ipc-bench: round trips with kit::ipc", policies, RUST_ARTIFACT, run);
    Component { name: RUST_RTT.into(), artifact: RUST_ARTIFACT, recipe }
}

/// The Python round-trip component: `python3` is the first on the core's `PATH` (the core
/// passes its environment on to components, as the nucleus does).
pub fn python_rtt(plan: &Plan) -> Component {
    let policies = vec![pubsub_policy(PYTHON_RTT, 1, &["PublishToTopic"], &[topics::RTT])];
    let run = format!(
        "python3 -u '{{artifacts:path}}/{PYTHON_ARTIFACT}' --ready '{{work:path}}/ready.json' {}",
        rtt_args(plan)
    );
    let recipe = recipe(PYTHON_RTT, "ipc-bench: round trips with awsiotsdk's clientv2", policies, PYTHON_ARTIFACT, run);
    Component { name: PYTHON_RTT.into(), artifact: PYTHON_ARTIFACT, recipe }
}

fn topic_args() -> String {
    format!("--topic {} --ctl {} --ack {}", topics::DATA, topics::CTL, topics::ACK)
}

/// The pub/sub publisher.
pub fn publisher(plan: &Plan) -> Component {
    let policies = vec![
        pubsub_policy(PUBLISHER, 1, &["PublishToTopic"], &[topics::DATA, topics::CTL]),
        pubsub_policy(PUBLISHER, 2, &["SubscribeToTopic"], &[topics::ACK]),
    ];
    let run = rust_run(&format!(
        "publish --go '{{work:path}}/go' --result '{{work:path}}/result.json' {} --size {} --window-count {} \
         --window {} --paced-count {} --rate {} --saturated-count {}",
        topic_args(),
        plan.payload_size,
        plan.window_count,
        plan.window,
        plan.paced_count,
        plan.paced_rate,
        plan.saturated_count
    ));
    let recipe = recipe(PUBLISHER, "ipc-bench: pub/sub publisher", policies, RUST_ARTIFACT, run);
    Component { name: PUBLISHER.into(), artifact: RUST_ARTIFACT, recipe }
}

/// The pub/sub subscriber.
pub fn subscriber() -> Component {
    let policies = vec![
        pubsub_policy(SUBSCRIBER, 1, &["SubscribeToTopic"], &[topics::DATA, topics::CTL]),
        pubsub_policy(SUBSCRIBER, 2, &["PublishToTopic"], &[topics::ACK]),
    ];
    let run = rust_run(&format!("subscribe --result '{{work:path}}/result.json' {}", topic_args()));
    let recipe = recipe(SUBSCRIBER, "ipc-bench: pub/sub subscriber", policies, RUST_ARTIFACT, run);
    Component { name: SUBSCRIBER.into(), artifact: RUST_ARTIFACT, recipe }
}

/// The `i`th idle component (1-based): connected, subscribed, doing nothing.
pub fn idle(i: usize) -> Component {
    let name = idle_name(i);
    let policies = vec![pubsub_policy(&name, 1, &["SubscribeToTopic"], &[topics::IDLE])];
    let run = rust_run(&format!("idle --topic {}", topics::IDLE));
    let recipe = recipe(&name, "ipc-bench: an idle subscriber", policies, RUST_ARTIFACT, run);
    Component { name, artifact: RUST_ARTIFACT, recipe }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_name_their_artifact_and_pass_the_plan() {
        let plan = Plan::quick();
        let c = rust_rtt(&plan);
        let uri = c.recipe["Manifests"][0]["Artifacts"][0]["URI"].as_str().unwrap();
        assert!(uri.ends_with(&format!("/{RUST_RTT}/{VERSION}/{RUST_ARTIFACT}")), "{uri}");
        let run = c.recipe["Manifests"][0]["Lifecycle"]["Run"].as_str().unwrap();
        assert!(run.contains(&format!("--calls {}", plan.rtt_calls)), "{run}");
        assert_eq!(c.recipe["Manifests"][0]["Artifacts"][0]["Permission"]["Execute"], "OWNER");
        let py = python_rtt(&plan);
        assert!(py.recipe["Manifests"][0]["Lifecycle"]["Run"].as_str().unwrap().starts_with("python3 -u "));
        assert!(py.recipe["Manifests"][0]["Artifacts"][0]["Permission"].get("Execute").is_none());
    }

    #[test]
    fn each_component_may_use_exactly_its_topics() {
        let sub = subscriber();
        let acl =
            &sub.recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.pubsub"];
        let subscribe = &acl[format!("{SUBSCRIBER}:pubsub:1")];
        assert_eq!(subscribe["operations"], json!(["aws.greengrass#SubscribeToTopic"]));
        assert_eq!(subscribe["resources"], json!([topics::DATA, topics::CTL]));
        assert_eq!(acl[format!("{SUBSCRIBER}:pubsub:2")]["resources"], json!([topics::ACK]));
    }

    #[test]
    fn idle_components_have_distinct_names() {
        assert_eq!(idle(1).name, "com.example.bench.Idle01");
        assert_ne!(idle(1).name, idle(10).name);
    }
}
