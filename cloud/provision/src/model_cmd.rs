//! `provision model release`: the command-line side of [`provision::model_release`].

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use provision::client::Target;
use provision::component::{PublishOptions, PublishOutcome};
use provision::model_release::MODEL_COMPONENT;

use crate::{FollowArgs, client_options};

/// `provision model …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ModelCommand {
    /// Check a trained model directory as the analyzer does, build it into a new
    /// com.example.pump.Model version (with the model checker its Install runs), publish it, and
    /// revise the thing group's deployment with only the model's version changed (ROLLBACK).
    Release(ReleaseArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ReleaseArgs {
    /// The trained model: model.onnx and model-card.json, as cloud/training/train.py writes them.
    #[arg(long, value_name = "DIR")]
    model_dir: PathBuf,
    /// The component version; must equal the card's `version` (default: the card's).
    #[arg(long, value_name = "X.Y.Z")]
    version: Option<String>,
    /// The thing group whose deployment gets the new version.
    #[arg(long, value_name = "GROUP", default_value = "pump-cores")]
    thing_group: String,
    /// The S3 bucket for the artifacts (created when absent).
    #[arg(long, value_name = "BUCKET")]
    bucket: String,
    /// Where pump-model-check was built (`cargo build -p pump-analyzer`).
    #[arg(long, value_name = "DIR", default_value = "target/release")]
    bin_dir: PathBuf,
    /// Directory that receives the staged component and greengrass-build/.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Publish only; deploy nothing.
    #[arg(long)]
    no_deploy: bool,
    #[command(flatten)]
    follow: FollowArgs,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn release(args: ReleaseArgs) -> anyhow::Result<()> {
    let checked = provision::model_release::check_model_dir(&args.model_dir, &args.bin_dir, args.version.as_deref())
        .context("checking the model before anything is published")?;
    println!("{}", checked.report);
    let built = provision::model_release::stage_release(&args.model_dir, &args.bin_dir, &args.out, &checked.version)
        .context("building the model component")?;
    let options = client_options(&args.target);
    let gg = provision::greengrass_client(&options).await;
    let s3 = provision::s3_client(&options).await;
    let published = provision::component::publish_component(&gg, &s3, &built, &PublishOptions::new(&args.bucket))
        .await
        .with_context(|| format!("publishing {MODEL_COMPONENT} {}", checked.version))?;
    match published.outcome {
        PublishOutcome::AlreadyPublished => println!("{MODEL_COMPONENT} {} already published", checked.version),
        PublishOutcome::Created { .. } => {
            println!("{MODEL_COMPONENT} {} published: {}", checked.version, published.arn)
        }
    }
    if args.no_deploy {
        return Ok(());
    }
    let iot = provision::iot_client(&options).await;
    let started = Instant::now();
    let created = provision::model_release::deploy_model_version(&iot, &gg, &args.thing_group, &checked.version)
        .await
        .with_context(|| format!("deploying {MODEL_COMPONENT} {} to {}", checked.version, args.thing_group))?;
    let result = crate::deploy_cmd::follow_and_report(&gg, &created, &args.follow).await;
    println!("{:.1} s from the deployment to every core's outcome", started.elapsed().as_secs_f64());
    result
}
