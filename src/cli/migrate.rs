use anyhow::Context;
use clap::Args;

use crate::adapters::dynamodb::{self, migrate::migrate};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The DynamoDB endpoint, for example http://127.0.0.1:8000 for DynamoDB Local
    /// (default: AWS_ENDPOINT_URL_DYNAMODB, else AWS).
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let tables = crate::settings::table_names();
    let client = dynamodb::client(args.endpoint_url.as_deref(), crate::settings::aws_policy()).await;
    let endpoint = args.endpoint_url.as_deref().unwrap_or("the configured AWS endpoint");
    let reports = migrate(&client, &tables).await.with_context(|| format!("migrating DynamoDB at {endpoint}"))?;
    for report in reports {
        if report.changes.is_empty() {
            println!("{}: up to date, no changes", report.table);
        }
        for change in report.changes {
            println!("{}: {change}", report.table);
        }
    }
    Ok(())
}
