//! `provision component build|publish`: the command-line side of [`provision::component`].

use std::path::PathBuf;

use anyhow::Context as _;
use provision::component::{BuildSpec, PUMP_COMPONENTS, PublishOptions, PublishOutcome};

use crate::{BuildArgs, PublishArgs, client_options};

pub(crate) fn build(args: BuildArgs) -> anyhow::Result<()> {
    let dirs = if args.dirs.is_empty() {
        PUMP_COMPONENTS.iter().map(|c| PathBuf::from("components").join(c)).collect()
    } else {
        args.dirs
    };
    let spec = BuildSpec { component_dirs: dirs, bin_dir: args.bin_dir, out: args.out };
    let built = provision::component::build_components(&spec).context("building components")?;
    for component in built {
        println!("{} {}  {}", component.name, component.version, component.recipe_path.display());
        for artifact in component.artifacts {
            println!("  {}  {} bytes  sha256 {}", artifact.file_name, artifact.size, artifact.digest);
        }
    }
    Ok(())
}

pub(crate) async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let options = client_options(&args.target);
    let gg = provision::greengrass_client(&options).await;
    let s3 = provision::s3_client(&options).await;
    let mut publish = PublishOptions::new(&args.bucket);
    publish.wait = std::time::Duration::from_secs(args.wait_secs);
    let published = provision::component::publish_build(&gg, &s3, &args.build_dir, &publish)
        .await
        .with_context(|| format!("publishing {}", args.build_dir.display()))?;
    for component in published {
        match component.outcome {
            PublishOutcome::AlreadyPublished => {
                println!("{} {} already published; nothing changed", component.name, component.version)
            }
            PublishOutcome::Created { uploaded } => {
                for key in uploaded {
                    println!("- uploaded s3://{}/{key}", args.bucket);
                }
                println!("{} {} published: {} (DEPLOYABLE)", component.name, component.version, component.arn);
            }
        }
    }
    Ok(())
}
