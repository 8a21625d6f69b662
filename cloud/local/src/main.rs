//! `local-cloud serve`: AWS IoT Core on this machine.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use local_cloud::credentials::AccessKeyPair;
use local_cloud::server::{Config, LocalCloud};

#[derive(Parser)]
#[command(
    version,
    about = "AWS IoT Core and S3 in one process: mTLS MQTT broker, registry, Device Shadow service, S3, AWS HTTP API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until SIGINT or SIGTERM.
    Serve {
        /// Data directory: CA, database, endpoints.json.
        #[arg(long)]
        data_dir: PathBuf,
        /// MQTT over TLS listener (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:8883")]
        mqtt_addr: SocketAddr,
        /// HTTP listener (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:4566")]
        http_addr: SocketAddr,
        /// Greengrass data plane for cores: HTTPS with mutual TLS (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:8443")]
        greengrass_data_plane_addr: SocketAddr,
        /// Region in ARNs.
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// Account id in ARNs.
        #[arg(long, default_value = "000000000000")]
        account_id: String,
        /// The administrator's access key id (every HTTP API verifies signatures against it); without it,
        /// a pair is generated on the first start and kept in the data directory.
        #[arg(long, env = "LOCAL_CLOUD_ACCESS_KEY_ID", requires = "secret_access_key")]
        access_key_id: Option<String>,
        /// The administrator's secret access key (with --access-key-id).
        #[arg(long, env = "LOCAL_CLOUD_SECRET_ACCESS_KEY", requires = "access_key_id", hide_env_values = true)]
        secret_access_key: Option<String>,
        /// The URL clients reach the HTTP endpoint at when it differs from --http-addr (a port
        /// mapping or a proxy in front): written to endpoints.json and signed into presigned URLs.
        #[arg(long, value_name = "URL")]
        public_http_url: Option<String>,
        /// How often CloudWatch evaluates its alarms, in milliseconds (AWS: every minute; tests
        /// shorten it).
        #[arg(long, env = "LOCAL_CLOUD_ALARM_EVALUATION_INTERVAL_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
        alarm_evaluation_interval_ms: u64,
        /// Divides every fleet metric's period as published (AWS's least period is 60 s; tests
        /// set 60 to publish each such metric every second). 1: as on AWS.
        #[arg(long, env = "LOCAL_CLOUD_FLEET_METRIC_PERIOD_DIVISOR", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3600))]
        fleet_metric_period_divisor: u32,
        /// How often IoT Core writes its AWS/IoT metrics to CloudWatch, in milliseconds (AWS:
        /// every minute; tests shorten it).
        #[arg(long, env = "LOCAL_CLOUD_IOT_METRICS_INTERVAL_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..))]
        iot_metrics_interval_ms: u64,
        /// The Cognito user pool whose users may sign in to the dashboard at `/dashboard/` (by
        /// name; `provision auditors` makes it).
        #[arg(long, env = "LOCAL_CLOUD_DASHBOARD_USER_POOL_NAME", default_value = local_cloud::dashboard::DEFAULT_USER_POOL_NAME)]
        dashboard_user_pool_name: String,
        /// The app client of that pool the dashboard's tokens must be issued to (by name).
        #[arg(long, env = "LOCAL_CLOUD_DASHBOARD_CLIENT_NAME", default_value = local_cloud::dashboard::DEFAULT_CLIENT_NAME)]
        dashboard_client_name: String,
        /// The audit's `checklist.json` the dashboard's checklist panel shows (default: none, "no audit yet").
        #[arg(long, env = "LOCAL_CLOUD_DASHBOARD_CHECKLIST", value_name = "FILE")]
        dashboard_checklist: Option<PathBuf>,
        /// The DynamoDB table of incidents the dashboard shows.
        #[arg(long, env = "LOCAL_CLOUD_DASHBOARD_INCIDENTS_TABLE", default_value = local_cloud::dashboard::DEFAULT_INCIDENTS_TABLE)]
        dashboard_incidents_table: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = match cli_shell::parse_args::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli_shell::init_logging("info,rustls=error");
    let result = cli_shell::block_on(run(cli));
    // Every failure here is the machine's (a port in use, a data directory it cannot write): 1.
    cli_shell::exit_code("local-cloud", result, |_| false)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            data_dir,
            mqtt_addr,
            http_addr,
            greengrass_data_plane_addr,
            region,
            account_id,
            access_key_id,
            secret_access_key,
            public_http_url,
            alarm_evaluation_interval_ms,
            fleet_metric_period_divisor,
            iot_metrics_interval_ms,
            dashboard_user_pool_name,
            dashboard_client_name,
            dashboard_checklist,
            dashboard_incidents_table,
        } => {
            let admin_credentials = access_key_id
                .zip(secret_access_key)
                .map(|(access_key_id, secret_access_key)| AccessKeyPair { access_key_id, secret_access_key });
            let config = Config {
                data_dir,
                mqtt_addr,
                http_addr,
                greengrass_data_plane_addr,
                region,
                account_id,
                admin_credentials,
                public_http_url,
                alarm_evaluation_interval: std::time::Duration::from_millis(alarm_evaluation_interval_ms),
                fleet_metric_period_divisor,
                iot_metrics_interval: std::time::Duration::from_millis(iot_metrics_interval_ms),
                dashboard: local_cloud::dashboard::DashboardConfig {
                    user_pool_name: dashboard_user_pool_name,
                    client_name: dashboard_client_name,
                    checklist: dashboard_checklist,
                    incidents_table: dashboard_incidents_table,
                },
            };
            let cloud = LocalCloud::start(config).await.context("starting the local cloud")?;
            tracing::info!(mqtt = %cloud.endpoints.mqtt, http = %cloud.endpoints.http, ca = %cloud.endpoints.ca_file.display(), "local cloud ready");
            let signal = cli_shell::shutdown_signal()?.await;
            tracing::info!("{signal} received; stopping");
            cloud.shutdown().await;
            Ok(())
        }
    }
}
