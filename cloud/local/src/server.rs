//! The embeddable local cloud: opens the data directory, starts the broker, the
//! HTTP endpoint and the Greengrass data plane, and writes `endpoints.json` once
//! all accept connections.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerConfig};
use crate::bus::{Bus, ServiceHandler};
use crate::ca::LocalCa;
use crate::credentials::AccessKeyPair;
use crate::greengrass::Greengrass;
use crate::greengrass::deployments::{CoreEvent, DeploymentJobs, Deployments, DeploymentsConfig, FleetStatusListener};
use crate::http::AppState;
use crate::jobs::mqtt::JobsMqtt;
use crate::jobs::{CreateJob, JobsService, TargetSelection};
use crate::provisioning::ProvisioningService;
use crate::provisioning::mqtt::ProvisioningMqtt;
use crate::registry::Registry;
use crate::s3::LocalS3;
use crate::shadows::ShadowService;
use crate::store::Store;
use crate::time::SharedClock;

/// Where to listen and keep state.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (CA, database, `endpoints.json`).
    pub data_dir: PathBuf,
    /// MQTT over TLS listener; port 0 picks a free port.
    pub mqtt_addr: SocketAddr,
    /// HTTP listener; port 0 picks a free port.
    pub http_addr: SocketAddr,
    /// Greengrass data plane for cores (HTTPS, mutual TLS); port 0 picks a free port.
    pub greengrass_data_plane_addr: SocketAddr,
    /// Region reported in ARNs and `endpoints.json`.
    pub region: String,
    /// Account id reported in ARNs and `endpoints.json`.
    pub account_id: String,
    /// The administrator's key pair, which every HTTP API verifies signatures against; `None`:
    /// the pair kept in the data directory (made at random on the first start).
    pub admin_credentials: Option<AccessKeyPair>,
    /// The URL clients reach the HTTP endpoint at, when that is not the listener's own address
    /// (a port mapping, or a proxy in front of it): it goes into `endpoints.json` and into
    /// presigned URLs, which sign its host. `None`: `http://{the listener's address}`.
    pub public_http_url: Option<String>,
    /// How often CloudWatch evaluates its alarms (AWS: every minute; shorter for tests).
    pub alarm_evaluation_interval: std::time::Duration,
    /// Fleet metrics are published every `period / this` (1: as on AWS; larger for tests).
    pub fleet_metric_period_divisor: u32,
    /// How often IoT Core's `AWS/IoT` metrics are written to CloudWatch (AWS: every minute;
    /// shorter for tests).
    pub iot_metrics_interval: std::time::Duration,
    /// The auditors' dashboard: which user pool and app client it trusts, what it reads.
    pub dashboard: crate::dashboard::DashboardConfig,
}

/// How often IoT Core writes its `AWS/IoT` metrics unless configured otherwise (as AWS).
pub const DEFAULT_IOT_METRICS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// How often CloudWatch evaluates its alarms unless configured otherwise.
pub const DEFAULT_ALARM_EVALUATION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl Config {
    /// Defaults: MQTT on 127.0.0.1:8883, HTTP on 127.0.0.1:4566, the Greengrass data plane on
    /// 127.0.0.1:8443 (AWS's port), `us-east-1`, `000000000000`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 8883)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 4566)),
            greengrass_data_plane_addr: SocketAddr::from(([127, 0, 0, 1], 8443)),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            admin_credentials: None,
            public_http_url: None,
            alarm_evaluation_interval: DEFAULT_ALARM_EVALUATION_INTERVAL,
            fleet_metric_period_divisor: 1,
            iot_metrics_interval: DEFAULT_IOT_METRICS_INTERVAL,
            dashboard: crate::dashboard::DashboardConfig::default(),
        }
    }

    /// Every listener on an ephemeral loopback port (for tests).
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        let mut c = Config::new(data_dir);
        c.mqtt_addr.set_port(0);
        c.http_addr.set_port(0);
        c.greengrass_data_plane_addr.set_port(0);
        c
    }
}

pub use cloud_api::endpoints::Endpoints;

/// A running local cloud.
pub struct LocalCloud {
    /// Where clients reach it.
    pub endpoints: Endpoints,
    /// The HTTP listener's own address (what `endpoints.http` names, unless a public URL is
    /// configured in front of it).
    pub http_addr: SocketAddr,
    /// The registry, for in-process use.
    pub registry: Arc<Registry>,
    /// The shadow service, for in-process use.
    pub shadows: ShadowService,
    /// Publishing into the broker, for in-process use.
    pub bus: Bus,
    /// S3, for in-process use (other services see it as an [`crate::s3::ObjectStore`]).
    pub s3: LocalS3,
    /// IoT Jobs, for in-process use (Greengrass creates deployment jobs and
    /// follows their executions through it).
    pub jobs: JobsService,
    /// Greengrass V2 (components), for in-process use; deployments reach the component store
    /// through [`crate::greengrass::ComponentCatalog`].
    pub greengrass: Greengrass,
    /// Greengrass deployments and core devices, for in-process use.
    pub deployments: Deployments,
    /// Fleet provisioning (templates, claims), for in-process use.
    pub provisioning: ProvisioningService,
    /// IAM (roles, temporary credentials), for in-process use.
    pub iam: crate::iam::Iam,
    /// The credentials provider (role aliases), for in-process use.
    pub iot_credentials: crate::iot_credentials::IotCredentials,
    /// The rules engine's topic rules, for in-process use.
    pub rules: crate::rules::TopicRules,
    /// Lambda (functions, invocations), for in-process use.
    pub lambda: crate::lambda::Lambda,
    /// DynamoDB's tables, for in-process use.
    pub dynamodb: crate::dynamodb::DynamoDb,
    /// CloudWatch Logs (log groups, streams, events), for in-process use.
    pub logs: crate::logs::Logs,
    /// CloudWatch metrics and alarms, for in-process use.
    pub cloudwatch: crate::cloudwatch::CloudWatch,
    /// Cognito user pools, for in-process use.
    pub cognito: crate::cognito::Cognito,
    /// Fleet indexing and fleet metrics, for in-process use.
    pub fleet_metrics: crate::fleet_index::metrics::FleetMetrics,
    /// What the rules engine has done (matches, actions, failures).
    pub rule_stats: std::sync::Arc<crate::rules::engine::RuleStats>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    store: Store,
}

impl std::fmt::Debug for LocalCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCloud").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

impl LocalCloud {
    /// Starts everything; returns once every listener accepts connections and `endpoints.json` is written.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        Self::start_with_clock(config, crate::time::system()).await
    }

    /// [`LocalCloud::start`] with an injected clock.
    pub async fn start_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        for addr in [config.mqtt_addr, config.http_addr, config.greengrass_data_plane_addr] {
            anyhow::ensure!(
                addr.ip().is_loopback() || addr.ip().is_unspecified(),
                "refusing to listen on {addr}: the local cloud listens on loopback (or an explicit any-address) only"
            );
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let data_dir = std::fs::canonicalize(&config.data_dir)
            .with_context(|| format!("resolving data directory {}", config.data_dir.display()))?;
        let ca = Arc::new(LocalCa::load_or_create(&data_dir.join("ca")).context("loading the local CA")?);
        let store = Store::open(&data_dir.join("state.sqlite")).context("opening state.sqlite")?;
        let registry = Arc::new(
            Registry::open(store.clone(), ca.clone(), clock.clone(), &config.region, &config.account_id)
                .context("loading the registry")?,
        );
        let admin = crate::credentials::load_or_create(config.admin_credentials.as_ref(), &data_dir)
            .context("loading the administrator's key pair")?;
        let (bus, bus_rx) = Bus::channel();
        let shadows = ShadowService::new(store.clone(), bus.clone(), clock.clone());

        let mqtt_listener = TcpListener::bind(config.mqtt_addr)
            .await
            .with_context(|| format!("binding MQTT listener {}", config.mqtt_addr))?;
        let http_listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP listener {}", config.http_addr))?;
        let gg_listener = TcpListener::bind(config.greengrass_data_plane_addr).await.with_context(|| {
            format!("binding the Greengrass data-plane listener {}", config.greengrass_data_plane_addr)
        })?;
        let mqtt_addr = mqtt_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;
        let gg_addr = gg_listener.local_addr()?;

        let shutdown = CancellationToken::new();
        let tls = ca.server_tls_config().context("building the TLS configuration (MQTT, Greengrass data plane)")?;
        let http_url = config.public_http_url.clone().unwrap_or_else(|| format!("http://{http_addr}"));
        let iam = crate::iam::Iam::new(store.clone(), clock.clone(), admin.clone(), &config.region, &config.account_id);
        let s3 = LocalS3::open(store.clone(), &data_dir, &config.region, &http_url, admin.clone(), iam.clone())
            .context("opening S3 storage")?;
        let events = Arc::new(
            crate::events::EventSettings::open(store.clone(), clock.clone()).context("loading event configurations")?,
        );
        let jobs = JobsService::open(
            store.clone(),
            bus.clone(),
            clock.clone(),
            registry.clone(),
            Arc::new(s3.clone()),
            events.clone(),
        )
        .context("loading jobs")?;
        let provisioning = ProvisioningService::open(store.clone(), registry.clone(), bus.clone(), clock.clone())
            .context("loading provisioning templates")?;
        let iot_credentials =
            crate::iot_credentials::IotCredentials::new(store.clone(), clock.clone(), iam.clone(), registry.clone());
        let rules = crate::rules::TopicRules::new(store.clone(), clock.clone(), &config.region, &config.account_id);
        let lambda = crate::lambda::Lambda::new(crate::lambda::LambdaConfig {
            store: store.clone(),
            clock: clock.clone(),
            iam: iam.clone(),
            objects: Arc::new(s3.clone()),
            data_dir: data_dir.clone(),
            http_url: http_url.clone(),
            shutdown: shutdown.clone(),
        });
        let dynamodb =
            crate::dynamodb::DynamoDb::open(&data_dir.join("dynamodb.sqlite"), &config.region, &config.account_id)
                .context("opening dynamodb.sqlite")?;
        let logs =
            crate::logs::Logs::open(&data_dir.join("logs.sqlite"), clock.clone(), &config.region, &config.account_id)
                .context("opening logs.sqlite")?;
        let cloudwatch =
            crate::cloudwatch::CloudWatch::open(store.clone(), clock.clone(), &config.region, &config.account_id)
                .context("opening CloudWatch's tables")?;
        let cognito =
            crate::cognito::Cognito::new(store.clone(), clock.clone(), &config.region, &config.account_id, &http_url);
        let fleet_index = crate::fleet_index::FleetIndex::open(store.clone(), registry.clone(), clock.clone())
            .context("loading the fleet index")?;
        let fleet_metrics = crate::fleet_index::metrics::FleetMetrics::new(
            fleet_index.clone(),
            store.clone(),
            &config.region,
            &config.account_id,
        );
        let iot_metrics: Arc<crate::iot_metrics::IotMetrics> = Arc::default();
        let recent = crate::dashboard::tap::Recent::default();
        let (rules_engine, rules_tap, rules_queue) = crate::rules::engine::RulesEngine::new(
            rules.clone(),
            bus.clone(),
            s3.clone(),
            dynamodb.clone(),
            iam.clone(),
            clock.clone(),
            iot_metrics.clone(),
        );
        let rules_engine = rules_engine
            .with_functions(Arc::new(lambda.clone()))
            .with_request_service(Arc::new(shadows.clone()))
            .with_cloudwatch(Arc::new(cloudwatch.clone()));

        // What cores report (fleet status, job executions, shadow updates) reaches the
        // deployment service in the order it happened, through one queue.
        let (core_events, core_events_rx) = tokio::sync::mpsc::unbounded_channel();
        let services: Vec<Arc<dyn ServiceHandler>> = vec![
            Arc::new(shadows.clone()),
            Arc::new(JobsMqtt::new(jobs.clone())),
            Arc::new(ProvisioningMqtt::new(provisioning.clone())),
            Arc::new(FleetStatusListener::new(core_events.clone())),
            rules_tap,
            Arc::new(crate::fleet_index::PresenceListener(fleet_index.clone())),
            Arc::new(crate::dashboard::tap::Tap(recent.clone())),
        ];
        let broker_config = BrokerConfig { metrics: iot_metrics.clone(), ..BrokerConfig::default() };
        let broker = Broker::new(registry.clone(), services, bus_rx, broker_config);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(broker.serve(mqtt_listener, tls.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(jobs.clone().run(shutdown.clone())));
        tasks.push(tokio::spawn(provisioning.clone().run(shutdown.clone())));
        let rule_stats = rules_engine.stats();
        tasks.push(tokio::spawn(rules_engine.run(rules_queue, shutdown.clone())));
        tasks.push(tokio::spawn(cloudwatch.clone().run(config.alarm_evaluation_interval, shutdown.clone())));
        tasks.push(tokio::spawn(fleet_metrics.clone().run(
            Arc::new(cloudwatch.clone()),
            config.fleet_metric_period_divisor,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(crate::iot_metrics::flush_every(
            iot_metrics.clone(),
            Arc::new(cloudwatch.clone()),
            clock.clone(),
            config.iot_metrics_interval,
            shutdown.clone(),
        )));
        let state = AppState {
            registry: registry.clone(),
            shadows: shadows.clone(),
            bus: bus.clone(),
            mqtt_endpoint: mqtt_addr.to_string(),
            jobs: jobs.clone(),
            provisioning: provisioning.clone(),
            events,
            iot_credentials: iot_credentials.clone(),
            rules: rules.clone(),
            credentials_endpoint: gg_addr.to_string(),
            iam: iam.clone(),
            dynamodb: dynamodb.clone(),
            logs: logs.clone(),
            cloudwatch: cloudwatch.clone(),
            cognito: cognito.clone(),
            fleet_metrics: fleet_metrics.clone(),
            iot_metrics: iot_metrics.clone(),
        };
        let objects: Arc<dyn crate::s3::ObjectStore> = Arc::new(s3.clone());
        let greengrass = Greengrass::open(store.clone(), objects, registry.clone(), clock.clone())
            .context("opening the Greengrass component store")?;
        // S3 first for requests signed for it; the IoT routes; the Greengrass and Lambda routes; unsigned
        // leftovers to S3.
        let deployments = Deployments::open(DeploymentsConfig {
            store: store.clone(),
            registry: registry.clone(),
            shadows: shadows.clone(),
            jobs: Arc::new(JobsForDeployments(jobs.clone())),
            catalog: greengrass.catalog(),
            clock: clock.clone(),
            region: config.region.clone(),
            account: config.account_id.clone(),
        })
        .context("loading Greengrass deployments")?;
        let dashboard = crate::dashboard::Dashboard::new(
            config.dashboard.clone(),
            crate::dashboard::Sources {
                registry: registry.clone(),
                shadows: shadows.clone(),
                deployments: deployments.clone(),
                jobs: jobs.clone(),
                fleet_index,
                cloudwatch: cloudwatch.clone(),
                dynamodb: dynamodb.clone(),
                cognito: cognito.clone(),
            },
            recent,
        );
        tasks.push(tokio::spawn(crate::dashboard::tap::follow_executions(
            dashboard.recent().clone(),
            jobs.subscribe(),
            clock.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(follow_cores(
            deployments.clone(),
            core_events,
            core_events_rx,
            jobs.subscribe(),
            shadows.changes(),
            shutdown.clone(),
        )));
        let greengrass_then_s3 = greengrass
            .control_plane()
            .merge(crate::greengrass::deployments_http::routes(deployments.clone()))
            .merge(crate::lambda::http::routes(lambda.clone()))
            .route_layer(axum::middleware::from_fn_with_state(iam.clone(), crate::iam::auth::authorize))
            .fallback_service(crate::s3::route::fallback(s3.service()));
        let iot = crate::http::router_with_fallback(state, greengrass_then_s3)
            .layer(axum::middleware::from_fn_with_state(dashboard, crate::dashboard::http::serve));
        let app = crate::s3::route::front(iot, s3.service());
        let http_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(http_listener, app).with_graceful_shutdown(http_shutdown.cancelled_owned()).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP endpoint stopped");
            }
        }));

        // The Greengrass data plane and the credentials provider: both called with a device
        // certificate (on AWS two endpoints, here one mutual-TLS listener).
        let device_routes = crate::greengrass::dataplane::routes(greengrass.clone())
            .merge(crate::iot_credentials::http::provider_routes(iot_credentials.clone()));
        let data_plane = crate::mtls::serve(gg_listener, tls, device_routes, shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = data_plane.await {
                tracing::error!(error = %e, "Greengrass data plane stopped");
            }
        }));

        let endpoints = Endpoints {
            mqtt: mqtt_addr.to_string(),
            http: http_url,
            ca_file: ca.ca_file(),
            region: config.region.clone(),
            account_id: config.account_id.clone(),
            credentials: Some(admin),
            greengrass_data_plane: Some(format!("https://{gg_addr}")),
            credentials_provider: Some(format!("https://{gg_addr}")),
        };
        let json = serde_json::to_vec_pretty(&endpoints)?;
        crate::ca::write_atomic(&data_dir.join("endpoints.json"), &json, true).context("writing endpoints.json")?;
        tracing::info!(mqtt = %endpoints.mqtt, http = %endpoints.http, "listening");
        Ok(LocalCloud {
            endpoints,
            http_addr,
            registry,
            shadows,
            bus,
            s3,
            jobs,
            greengrass,
            deployments,
            provisioning,
            iam,
            iot_credentials,
            rules,
            lambda,
            dynamodb,
            logs,
            cloudwatch,
            cognito,
            fleet_metrics,
            rule_stats,
            shutdown,
            tasks,
            store,
        })
    }

    /// Stops the listeners, drops connections, stops function processes, and flushes state.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.lambda.stopped().await;
        if let Err(e) = self.store.checkpoint() {
            tracing::warn!(error = %e, "checkpointing state.sqlite");
        }
        if let Err(e) = self.logs.checkpoint() {
            tracing::warn!(error = %e, "checkpointing logs.sqlite");
        }
    }
}

/// Reads `endpoints.json` from a data directory.
pub fn read_endpoints(data_dir: &Path) -> anyhow::Result<Endpoints> {
    let path = data_dir.join("endpoints.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Greengrass deployments' way into IoT Jobs: a thing-group deployment is a
/// continuous job in the `aws-gg-deployment` namespace.
struct JobsForDeployments(JobsService);

impl DeploymentJobs for JobsForDeployments {
    fn create_deployment_job(
        &self,
        job_id: &str,
        group_arn: &str,
        document: serde_json::Map<String, serde_json::Value>,
        iot_job_configuration: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, String> {
        let member = |name: &str| iot_job_configuration.get(name).cloned();
        let request = CreateJob {
            targets: vec![group_arn.to_owned()],
            document: Some(serde_json::Value::Object(document).to_string()),
            description: Some("AWS IoT Greengrass deployment".into()),
            target_selection: Some(TargetSelection::Continuous),
            job_executions_rollout_config: member("jobExecutionsRolloutConfig"),
            abort_config: member("abortConfig"),
            timeout_config: member("timeoutConfig"),
            namespace_id: Some(cloud_api::greengrass::DEPLOYMENT_JOB_NAMESPACE.into()),
            ..CreateJob::default()
        };
        self.0.create_job(job_id, request).map_err(|e| e.to_string())
    }

    fn cancel_job(&self, job_id: &str) -> Result<(), String> {
        self.0.cancel_job(job_id, false, None, None).map_err(|e| e.to_string())
    }
}

/// Feeds the deployment service what cores report: fleet status (queued by the
/// broker's listener on `events`), job executions and shadow updates, applied
/// one at a time on the blocking pool, in arrival order.
async fn follow_cores(
    deployments: Deployments,
    events: tokio::sync::mpsc::UnboundedSender<CoreEvent>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<CoreEvent>,
    mut executions: tokio::sync::broadcast::Receiver<crate::jobs::ExecutionChange>,
    mut shadow_changes: tokio::sync::broadcast::Receiver<crate::shadows::ShadowChange>,
    shutdown: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            change = executions.recv() => match change {
                Ok(c) => {
                    let _ = events.send(CoreEvent::JobExecution {
                        thing: c.thing_name,
                        job_id: c.job_id,
                        status: c.status.as_str().to_owned(),
                        details: c.status_details,
                    });
                }
                Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "Greengrass fell behind on job executions"),
                Err(RecvError::Closed) => return,
            },
            change = shadow_changes.recv() => match change {
                // Only a core's deployment shadow concerns Greengrass; the pump's updates pass by here.
                Ok(c) if c.shadow_name.as_deref() == Some(cloud_api::greengrass::DEPLOYMENT_SHADOW_NAME) => {
                    let _ = events.send(CoreEvent::Shadow(c));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "Greengrass fell behind on shadow updates"),
                Err(RecvError::Closed) => return,
            },
            event = queue.recv() => {
                let Some(event) = event else { return };
                let service = deployments.clone();
                if tokio::task::spawn_blocking(move || service.apply(event)).await.is_err() {
                    tracing::error!("applying a core's report failed");
                }
            }
        }
    }
}
