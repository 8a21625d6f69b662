//! `provision deploy`: the command-line side of [`provision::deploy`] — arguments to a spec, a
//! progress display while the cores work (indicatif on a terminal, plain lines otherwise), and
//! the summary.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use provision::deploy::{CoreStatus, CreatedDeployment, DeploySpec, FollowOptions};

use crate::{DeployArgs, FailureHandling, FollowArgs, client_options};

pub(crate) async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let spec = DeploySpec {
        thing_group: args.thing_group.clone(),
        create_group: args.create_group,
        components: args.components.iter().map(|c| provision::deploy::parse_component(c)).collect::<Result<_, _>>()?,
        merges: args.merges.iter().map(|m| provision::deploy::parse_merge(m)).collect::<Result<_, _>>()?,
        deployment_name: args.name.clone(),
        rollout_max_per_minute: args.rollout_max_per_minute,
        abort_failure_percent: args.abort_failure_percent,
        update_timeout_secs: args.update_timeout_secs,
        rollback: args.failure_handling.map(|f| f == FailureHandling::Rollback),
        notify: match (args.notify, args.skip_notify) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
    };
    let options = client_options(&args.target);
    let iot = provision::iot_client(&options).await;
    let gg = provision::greengrass_client(&options).await;
    let created = provision::deploy::create_group_deployment(&iot, &gg, &spec)
        .await
        .with_context(|| format!("deploying to thing group {}", args.thing_group))?;
    follow_and_report(&gg, &created, &args.follow).await
}

/// Prints the created deployment, follows it on every core of its group with a progress
/// display, prints the summary; an error when a core did not succeed or time ran out.
pub(crate) async fn follow_and_report(
    gg: &aws_sdk_greengrassv2::Client,
    created: &CreatedDeployment,
    follow: &FollowArgs,
) -> anyhow::Result<()> {
    let timeout_secs = follow.timeout;
    println!(
        "deployment {} to {} (job {})",
        created.deployment_id,
        created.target_arn,
        created.iot_job_id.as_deref().unwrap_or("-")
    );

    let follow =
        FollowOptions { timeout: Duration::from_secs(follow.timeout), poll: Duration::from_millis(follow.poll_ms) };
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("waiting for the cores of the group");
        bar
    });
    let mut seen: std::collections::BTreeMap<String, String> = Default::default();
    let mut on_change = |core: &CoreStatus| {
        let line = describe(core);
        seen.insert(core.thing.clone(), core.status_text().to_owned());
        match &bar {
            Some(bar) => {
                bar.println(&line);
                let done =
                    seen.values().filter(|s| !matches!(s.as_str(), "WAITING" | "IN_PROGRESS" | "QUEUED")).count();
                bar.set_message(format!("{done}/{} cores done", seen.len()));
            }
            None => println!("{line}"),
        }
    };
    let outcome =
        provision::deploy::follow_deployment(gg, &created.target_arn, &created.deployment_id, follow, &mut on_change)
            .await
            .with_context(|| format!("following deployment {}", created.deployment_id))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    println!("summary of deployment {}:", outcome.deployment_id);
    for core in &outcome.cores {
        println!("  {}", describe(core));
    }
    if outcome.succeeded() {
        println!("deployment {} succeeded on {} core(s)", outcome.deployment_id, outcome.cores.len());
        return Ok(());
    }
    let failed = outcome.cores.iter().filter(|c| c.is_failure()).count();
    if outcome.timed_out {
        anyhow::bail!(
            "deployment {} did not finish within {} s ({} core(s) seen, {failed} failed); it goes on in the service",
            outcome.deployment_id,
            timeout_secs,
            outcome.cores.len()
        );
    }
    anyhow::bail!("deployment {} failed on {failed} of {} core(s)", outcome.deployment_id, outcome.cores.len())
}

fn describe(core: &CoreStatus) -> String {
    match &core.reason {
        Some(reason) => format!("{}: {} ({reason})", core.thing, core.status_text()),
        None => format!("{}: {}", core.thing, core.status_text()),
    }
}
