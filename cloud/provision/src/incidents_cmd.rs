//! `provision incidents`: operators' findings on the incidents table.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use provision::incidents::{Cause, Confirmation, confirm};

use crate::{Target, client_options};

#[derive(Debug, Subcommand)]
pub(crate) enum IncidentsCommand {
    /// Record the cause an operator found for a raised anomaly (or that it was a false alarm);
    /// the retraining pipeline labels the raise's windows with it.
    Confirm(ConfirmArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ConfirmArgs {
    /// The pump's thing.
    #[arg(long, value_name = "THING")]
    thing: String,
    /// The raised incident's sort key, `{ts}#{id}#raised`, as the table lists it.
    #[arg(long, value_name = "KEY")]
    at: String,
    /// What was found.
    #[arg(long, value_enum)]
    cause: Cause,
    /// Who found it (kept as `confirmedBy`).
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    /// The incidents table (`provision app` names it `{prefix}-incidents`).
    #[arg(long, value_name = "TABLE", default_value = "pump-incidents")]
    table: String,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(command: IncidentsCommand) -> anyhow::Result<()> {
    match command {
        IncidentsCommand::Confirm(args) => {
            let db = provision::dynamodb_client(&client_options(&args.target)).await;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            let c = Confirmation {
                table: args.table,
                thing: args.thing,
                at: args.at,
                cause: args.cause,
                by: args.by,
                confirmed_at: i64::try_from(now).unwrap_or(i64::MAX),
            };
            confirm(&db, &c).await.with_context(|| format!("confirming incident {} {}", c.thing, c.at))?;
            println!("{}", serde_json::json!({"thing": c.thing, "at": c.at, "confirmedCause": c.cause.name()}));
            Ok(())
        }
    }
}
