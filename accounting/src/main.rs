//! `accounting [serve | migrate]`

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    popug_service::main::<accounting::Application>().await
}
