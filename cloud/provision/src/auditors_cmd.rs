//! `provision auditors`: the dashboard's user pool, app client and auditor user.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use provision::auditors::{AuditorsSpec, DEFAULT_CLIENT_NAME, DEFAULT_POOL_NAME, DEFAULT_USERNAME, ensure_auditors};

use crate::{Target, client_options};

#[derive(Debug, Args)]
pub(crate) struct AuditorsArgs {
    /// The user pool's name.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_POOL_NAME)]
    pool_name: String,
    /// The app client's name.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CLIENT_NAME)]
    client_name: String,
    /// The auditor's user name.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_USERNAME)]
    username: String,
    /// The auditor's e-mail address (kept as the `email` attribute).
    #[arg(long, value_name = "ADDRESS")]
    email: Option<String>,
    /// The auditor's password: read from this file, or made at random and written there (0600).
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: AuditorsArgs) -> anyhow::Result<()> {
    let cognito = provision::cognito_client(&client_options(&args.target)).await;
    let spec = AuditorsSpec {
        pool_name: args.pool_name,
        client_name: args.client_name,
        username: args.username,
        email: args.email,
        password_file: args.password_file,
    };
    let auditors = ensure_auditors(&cognito, &spec).await.context("setting up the auditors' sign-in")?;
    println!("{}", serde_json::to_string_pretty(&auditors)?);
    Ok(())
}
