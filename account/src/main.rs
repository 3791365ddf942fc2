//! `account [serve | migrate | seed-demo | rotate-key | retire-key KID]`

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    popug_service::main::<account::Application>().await
}
