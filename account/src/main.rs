//! `account [serve | migrate | seed-demo | rotate-key | retire-key KID]`

use account::{Application, Settings};

const USAGE: &str = "usage: account [serve | migrate | seed-demo | rotate-key | retire-key KID]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = popug_telemetry::init("account");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = Settings::from_env()?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => {
            let app = Application::build(settings).await?;
            app.run_until_stopped(popug_grpc::shutdown_signal()).await
        }
        ["migrate"] => {
            account::startup::connect_and_migrate(&settings).await?;
            println!("account: migrations applied");
            Ok(())
        }
        ["seed-demo"] => {
            // Builds the whole service so the relay can publish the new users' events.
            let app = Application::build(Settings {
                grpc_addr: ([127, 0, 0, 1], 0).into(),
                http_addr: ([127, 0, 0, 1], 0).into(),
                ..settings
            })
            .await?;
            let accounts = app.accounts();
            let created = account::seed::demo(&accounts)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            // Stop once every event of the new users is out.
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let pool = accounts.pool.clone();
            let waiter = tokio::spawn(async move {
                loop {
                    let pending: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM eventbus.outbox WHERE published_at IS NULL",
                    )
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(1);
                    if pending == 0 {
                        let _ = tx.send(());
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            });
            app.run_until_stopped(async move {
                let _ = rx.await;
            })
            .await?;
            waiter.await?;
            println!("account: demo data seeded ({created} new users)");
            for (username, _, _, role, password) in account::seed::DEMO_USERS {
                println!("  {username:<11} {:<11} {password}", role.as_str());
            }
            Ok(())
        }
        ["rotate-key"] => {
            let pool = account::startup::connect_and_migrate(&settings).await?;
            let kid = account::keys::rotate(&pool).await?;
            println!("account: new signing key {kid}; older keys stay published until retired");
            Ok(())
        }
        ["retire-key", kid] => {
            let pool = account::startup::connect_and_migrate(&settings).await?;
            account::keys::retire(&pool, kid).await?;
            println!("account: key {kid} retired; tokens it signed no longer verify");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
