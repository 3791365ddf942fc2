//! `gateway [serve | migrate | policy-table | dead-letters list|show|replay]`

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    popug_service::main::<gateway::Application>().await
}
