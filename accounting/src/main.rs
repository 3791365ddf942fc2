//! `accounting [serve | migrate | dead-letters list|show|replay]`

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    popug_service::main::<accounting::Application>().await
}
