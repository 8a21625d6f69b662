//! The demo's last act: the operator's monitoring (`provision monitoring deploy`), then the
//! service-delivery audit of the demo's own live local cloud, in process, with the same library
//! the `audit` binary runs (`provision::audit::output`), written to `{out}/audit/`. The case
//! study's partner fields come from the committed demo input (`case-study.demo.toml`, every value
//! marked DEMO; the statements only a partner can make are left as placeholders). The local
//! cloud's dashboard reads `{out}/audit/checklist.json` when asked ([`checklist_file`]), so with
//! `--keep-running` its checklist panel shows this audit.

use std::path::{Path, PathBuf};

use anyhow::Context;
use provision::audit::output::{self, RunOptions};

use crate::site::Site;

/// The demo's case-study input: clearly marked demo values.
const DEMO_INPUT: &str = include_str!("../case-study.demo.toml");
/// The prefix of the cloud side's resources (`provision app --prefix`, the monitoring's).
const PREFIX: &str = "pump";

/// Where the audit goes under the demo's output directory.
pub fn audit_dir(out: &Path) -> PathBuf {
    out.join("audit")
}

/// The checklist the local cloud's dashboard shows, for a site kept under `{out}/run`.
pub fn checklist_file(run_dir: &Path) -> PathBuf {
    audit_dir(run_dir.parent().unwrap_or(run_dir)).join("checklist.json")
}

/// How the audit came out.
#[derive(Debug, Clone)]
pub struct AuditOutcome {
    /// The audit directory.
    pub dir: PathBuf,
    /// Lines met, of all.
    pub met: usize,
    /// Every line.
    pub lines: usize,
    /// Evidence-based lines met, of all evidence-based ones.
    pub evidence_met: usize,
    /// Evidence-based lines.
    pub evidence_lines: usize,
    /// The lines not met, with their basis.
    pub unmet: Vec<(String, String)>,
}

impl AuditOutcome {
    /// The summary line the demo prints.
    pub fn line(&self) -> String {
        let unmet: Vec<String> = self.unmet.iter().map(|(id, basis)| format!("{id} ({basis})")).collect();
        format!(
            "audit: {}: {} of {} lines met, {} of {} evidence lines{}",
            self.dir.display(),
            self.met,
            self.lines,
            self.evidence_met,
            self.evidence_lines,
            if unmet.is_empty() { String::new() } else { format!("; not met: {}", unmet.join(", ")) }
        )
    }
}

/// Deploys the monitoring and writes the audit of the site's cloud into `{out}/audit/`, reading
/// the run's `{out}/report.json`.
pub async fn run(site: &Site, out: &Path) -> anyhow::Result<AuditOutcome> {
    let options = provision::ClientOptions::for_local_cloud(&site.endpoints)?;
    let operator = site.operator.as_ref().context("the site has not started")?;
    let monitoring = provision::monitoring::MonitoringClients {
        iot: site.iot.clone(),
        iam: operator.iam.clone(),
        cloudwatch: provision::cloudwatch_client(&options).await,
    };
    let spec = provision::monitoring::MonitoringSpec {
        prefix: PREFIX.into(),
        group: crate::rollout::THING_GROUP.into(),
        period_secs: 60,
        disconnected_secs: 300,
        telemetry_gap_secs: 600,
        watched_rules: provision::app::app_rules(PREFIX).to_vec(),
        auth_failures: 20,
        certificate_days: 30,
        alarm_actions: Vec::new(),
    };
    provision::monitoring::deploy_monitoring(&monitoring, &spec).await.context("deploying the monitoring")?;

    let input = out.join("case-study.demo.toml");
    std::fs::write(&input, DEMO_INPUT).with_context(|| format!("writing {}", input.display()))?;
    let workspace = workspace();
    let run_options = RunOptions {
        thing_group: Some(crate::rollout::THING_GROUP.into()),
        prefix: Some(PREFIX.into()),
        input: Some(std::path::absolute(&input)?),
        ..RunOptions::with_workspace_defaults(&workspace, Some(out.join("report.json")), None, None)
    };
    let clients = provision::audit::collect::AuditClients::new(&options).await;
    let audit = output::audit(&clients, &run_options, now()).await.context("reading the deployment")?;
    let dir = audit_dir(out);
    let lines = output::write(&dir, &audit).context("writing the audit")?;
    let evidence: Vec<_> = lines.iter().filter(|l| l.basis == "evidence").collect();
    Ok(AuditOutcome {
        dir,
        met: lines.iter().filter(|l| l.met).count(),
        lines: lines.len(),
        evidence_met: evidence.iter().filter(|l| l.met).count(),
        evidence_lines: evidence.len(),
        unmet: lines.iter().filter(|l| !l.met).map(|l| (l.id.clone(), l.basis.clone())).collect(),
    })
}

/// The repository the demo was built from (model cards, prices, third-party packages), else the
/// working directory.
fn workspace() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if built.join("Cargo.toml").exists() { built } else { PathBuf::from(".") }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
