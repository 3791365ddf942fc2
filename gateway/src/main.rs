//! `gateway [serve | migrate | policy-table]`

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    popug_service::main::<gateway::Application>().await
}
