//! `taskkeeper [serve | migrate]`

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    popug_service::main::<taskkeeper::Application>().await
}
