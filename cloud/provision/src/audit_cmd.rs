//! `provision audit`: the command-line side of [`provision::audit`] — read the account, write the
//! report (JSON or Markdown, to standard output or a file), and fail on findings at or above
//! `--fail-on`.

use crate::{AuditArgs, ReportFormat, client_options};
use anyhow::Context as _;

/// The exit code when a finding reaches `--fail-on`: distinct from 1 (AWS or the network failed).
pub(crate) const FINDINGS_EXIT_CODE: u8 = 2;

/// The audit ran and found something at or above the threshold.
#[derive(Debug, thiserror::Error)]
#[error("{count} finding(s) at or above {threshold}")]
pub(crate) struct FindingsAtOrAbove {
    count: usize,
    threshold: &'static str,
}

pub(crate) async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let options = client_options(&args.target);
    let iot = provision::iot_client(&options).await;
    let iam = provision::iam_client(&options).await;
    let report = provision::audit::audit_account(&iot, &iam, args.expiry_days).await.context("auditing the account")?;
    let text = match args.format {
        ReportFormat::Json => report.to_json(),
        ReportFormat::Markdown => report.to_markdown(),
    };
    match &args.out {
        Some(path) => {
            provision::output::write_atomic(path, text.as_bytes(), 0o644)
                .with_context(|| format!("writing the report to {}", path.display()))?;
            let s = &report.summary;
            println!(
                "report written to {}: {} critical, {} high, {} medium, {} low",
                path.display(),
                s.critical,
                s.high,
                s.medium,
                s.low
            );
        }
        None => print!("{text}"),
    }
    match args.fail_on {
        Some(t) if report.fails(args.fail_on) => {
            Err(FindingsAtOrAbove { count: report.at_or_above(t), threshold: t.as_str() }.into())
        }
        _ => Ok(()),
    }
}
