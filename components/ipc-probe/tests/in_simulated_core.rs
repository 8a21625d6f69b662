//! `ipc-probe`, built from this workspace, run by the simulated core (`device_sim::core::runtime`)
//! from its own `recipe.yaml`: the core starts it, it talks IPC, we read its report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use device_sim::core::ComponentState;
use device_sim::core::runtime::{Core, CoreOptions};
use device_sim::recipe::DevicePlatform;
use serde_json::{Value, json};

const NAME: &str = "com.example.IpcProbe";
const VERSION: &str = "1.0.0";
const THING: &str = "probe-core";
const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A recipe dir with the probe's recipe (edited by `edit`), an artifact dir with the binary.
    fn new(edit: impl Fn(String) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let recipes = dir.path().join("recipes");
        let artifacts = dir.path().join("artifacts").join(NAME).join(VERSION);
        std::fs::create_dir_all(&recipes).unwrap();
        std::fs::create_dir_all(&artifacts).unwrap();
        let recipe = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("recipe.yaml")).unwrap();
        std::fs::write(recipes.join("recipe.yaml"), edit(recipe)).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_ipc-probe"), artifacts.join("ipc-probe")).unwrap();
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    async fn start(&self) -> Core {
        Core::start(CoreOptions {
            root: self.root(),
            thing: THING.into(),
            recipe_dir: self.dir.path().join("recipes"),
            artifact_dir: self.dir.path().join("artifacts"),
            merges: vec![format!("{NAME}={VERSION}")],
            region: "eu-west-1".into(),
            root_ca_path: None,
            platform: DevicePlatform::new("linux", "amd64"),
            update_config: Default::default(),
            cloud: None,
            nucleus_version: CoreOptions::default_nucleus_version(),
        })
        .await
        .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root().join("logs").join(format!("{NAME}.log"))).unwrap_or_default()
    }

    /// Waits for the probe's report to appear.
    async fn report(&self, core: &Core) -> Value {
        let path = core.layout().work_dir(NAME).join("report.json");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return serde_json::from_str(&text).unwrap();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no report after {WAIT:?}; states {:?}; log:\n{}",
                core.states(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn the_probe_runs_from_its_recipe_and_every_ipc_operation_works() {
    let fx = Fixture::new(|r| r);
    let core = fx.start().await;
    let state = core.wait_for_state(NAME, &[ComponentState::Running, ComponentState::Broken], WAIT).await;
    assert_eq!(state, Some(ComponentState::Running), "log:\n{}", fx.log());

    let report = fx.report(&core).await;
    let steps = &report["steps"];
    for step in ["UpdateState", "GetConfiguration", "SubscribeToTopic", "PublishToTopic", "ReceiveMessage"] {
        assert_eq!(steps[step]["ok"], true, "{step}: {report:#}");
    }
    for step in ["UpdateThingShadow", "GetThingShadow"] {
        assert_eq!(steps[step]["ok"], true, "{step}: {report:#}");
    }
    assert_eq!(report["environment"]["thingName"], THING);
    assert_eq!(report["environment"]["region"], "eu-west-1");
    assert_eq!(report["topic"], "probe/echo", "{{configuration:/topic}} expanded in the Run script");
    assert_eq!(steps["GetConfiguration"]["value"], json!({"message": "hello from the recipe"}));
    let sent = &steps["PublishToTopic"]["value"];
    assert_eq!(steps["ReceiveMessage"]["value"], json!({"topic": "probe/echo", "message": sent}));
    let nonce = &sent["probe"];
    let updated = &steps["UpdateThingShadow"]["value"];
    assert_eq!(updated["version"], 1, "{updated}");
    assert_eq!(updated["state"]["reported"], json!({"probe": nonce, "status": "ok"}));
    let got = &steps["GetThingShadow"]["value"];
    assert_eq!(got["version"], 1, "{got}");
    assert_eq!(got["state"]["reported"], json!({"probe": nonce, "status": "ok"}));
    // The core's own shadow store agrees.
    let stored = core.shadows().get(THING, "probe").unwrap();
    assert_eq!(stored["version"], 1);

    // Still running (it waits for a signal); shutdown stops it cleanly.
    assert_eq!(core.states().get(NAME), Some(&ComponentState::Running));
    let socket = core.socket_path().to_path_buf();
    let mut events = core.subscribe();
    let pending = core.shutdown(WAIT).await;
    assert!(pending.is_empty(), "not stopped: {pending:?}");
    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        seen.push(ev.new);
    }
    assert_eq!(seen.last(), Some(&ComponentState::Finished), "{seen:?}");
    assert!(!socket.exists(), "the IPC socket is removed");
    assert!(fx.log().contains("ipc-probe: stopping"), "the probe saw SIGTERM:\n{}", fx.log());
}

#[tokio::test]
async fn a_topic_outside_the_recipes_access_control_is_unauthorized() {
    let fx = Fixture::new(|r| {
        let edited = r.replace("topic: probe/echo", "topic: forbidden/topic");
        assert_ne!(edited, r);
        edited
    });
    let core = fx.start().await;
    let report = fx.report(&core).await;
    let steps = &report["steps"];
    assert_eq!(report["topic"], "forbidden/topic");
    for step in ["SubscribeToTopic", "PublishToTopic"] {
        assert_eq!(steps[step]["ok"], false, "{step}: {report:#}");
        assert_eq!(steps[step]["error"]["code"], "UnauthorizedError", "{step}: {report:#}");
    }
    assert!(steps.get("ReceiveMessage").is_none(), "{report:#}");
    // The rest still works: one denied call does not break the connection.
    for step in ["UpdateState", "GetConfiguration", "UpdateThingShadow", "GetThingShadow"] {
        assert_eq!(steps[step]["ok"], true, "{step}: {report:#}");
    }
    let pending = core.shutdown(WAIT).await;
    assert!(pending.is_empty(), "not stopped: {pending:?}");
}

#[tokio::test]
async fn a_shadow_outside_the_recipes_access_control_is_unauthorized() {
    let fx = Fixture::new(|r| r.replace("/shadow/name/probe", "/shadow/name/other"));
    let core = fx.start().await;
    let report = fx.report(&core).await;
    let steps = &report["steps"];
    for step in ["UpdateThingShadow", "GetThingShadow"] {
        assert_eq!(steps[step]["error"]["code"], "UnauthorizedError", "{step}: {report:#}");
    }
    assert_eq!(steps["ReceiveMessage"]["ok"], true, "{report:#}");
    assert!(core.shadows().get(THING, "probe").is_err());
    core.shutdown(WAIT).await;
}
