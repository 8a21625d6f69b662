//! `provision monitoring`: the alarms of the fleet, and the certificate-expiry check that feeds one.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use provision::monitoring::{MonitoringClients, MonitoringSpec, deploy_monitoring, publish_certificate_expiry};

use crate::{Target, client_options};

#[derive(Debug, Subcommand)]
pub(crate) enum MonitoringCommand {
    /// Create or update the fleet's alarms and what feeds them: connectivity indexing and a fleet
    /// metric of disconnected cores, rules turning fleet status and telemetry into metrics, and
    /// alarms on those and on IoT Core's own rule and authorization metrics.
    Deploy(DeployArgs),
    /// Publish the least days left on the group's core certificates (run it daily: EventBridge
    /// Scheduler on AWS, cron elsewhere), which the certificate-expiry alarm watches.
    CheckCertificates(CheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// The thing group of the cores.
    #[arg(long, value_name = "GROUP")]
    group: String,
    /// Prefix of every resource's name.
    #[arg(long, value_name = "PREFIX", default_value = "pump")]
    prefix: String,
    /// The alarms' period, seconds (10, 30 or a multiple of 60).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    period: i32,
    /// A core disconnected this long raises the disconnect alarm.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    disconnected_after: i32,
    /// No pump telemetry from the fleet for this long raises the telemetry-gap alarm.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    telemetry_gap: i32,
    /// A rule whose action failures raise an alarm (repeatable; default: the application's two
    /// rules under the same prefix, as `provision app` names them).
    #[arg(long = "watch-rule", value_name = "RULE")]
    watched_rules: Vec<String>,
    /// Authentication or authorization failures within five minutes that raise an alarm.
    #[arg(long, value_name = "N", default_value_t = 20)]
    auth_failures: u32,
    /// A core certificate expiring within this many days raises an alarm.
    #[arg(long, value_name = "DAYS", default_value_t = provision::audit::DEFAULT_EXPIRY_DAYS)]
    certificate_days: u32,
    /// An action of every alarm, on ALARM and back to OK (an SNS topic ARN; repeatable).
    #[arg(long = "alarm-action", value_name = "ARN")]
    alarm_actions: Vec<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The thing group of the cores.
    #[arg(long, value_name = "GROUP")]
    group: String,
    #[command(flatten)]
    target: Target,
}

async fn clients(target: &Target) -> MonitoringClients {
    let options = client_options(target);
    MonitoringClients {
        iot: provision::iot_client(&options).await,
        iam: provision::iam_client(&options).await,
        cloudwatch: provision::cloudwatch_client(&options).await,
    }
}

pub(crate) async fn run(command: MonitoringCommand) -> anyhow::Result<()> {
    match command {
        MonitoringCommand::Deploy(args) => {
            let spec = MonitoringSpec {
                group: args.group,
                period_secs: args.period,
                disconnected_secs: args.disconnected_after,
                telemetry_gap_secs: args.telemetry_gap,
                watched_rules: if args.watched_rules.is_empty() {
                    provision::app::app_rules(&args.prefix).to_vec()
                } else {
                    args.watched_rules
                },
                auth_failures: args.auth_failures,
                certificate_days: args.certificate_days,
                alarm_actions: args.alarm_actions,
                prefix: args.prefix,
            };
            let deployed =
                deploy_monitoring(&clients(&args.target).await, &spec).await.context("deploying the monitoring")?;
            if deployed.changes.is_empty() {
                println!("the monitoring is already deployed; nothing changed");
            }
            for change in &deployed.changes {
                println!("- {change}");
            }
            println!("alarms       {}", deployed.alarms.join(" "));
            println!("fleet metric {}", deployed.names.fleet_metric);
            println!("rules        {} {}", deployed.names.health_rule, deployed.names.telemetry_rule);
        }
        MonitoringCommand::CheckCertificates(args) => {
            match publish_certificate_expiry(&clients(&args.target).await, &args.group)
                .await
                .context("checking the certificates")?
            {
                Some(days) => println!("CertificateDaysLeft {days}"),
                None => println!("no core of {} has an active certificate; nothing published", args.group),
            }
        }
    }
    Ok(())
}
